package forgejo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Runner is a registered runner as Forgejo 15's API shows it (modules/structs ActionRunner).
type Runner struct {
	ID      int64  `json:"id"`
	UUID    string `json:"uuid"`
	OwnerID int64  `json:"owner_id"`
	RepoID  int64  `json:"repo_id"`
	Name    string `json:"name"`
	// Status is RunnerOffline, RunnerIdle or RunnerActive.
	Status      string `json:"status"`
	Version     string `json:"version"`
	Labels      Labels `json:"labels"`
	Description string `json:"description"`
	Ephemeral   bool   `json:"ephemeral"`
}

// Runner statuses.
const (
	RunnerOffline = "offline"
	RunnerIdle    = "idle"
	RunnerActive  = "active"
)

// Labels are a runner's label names. Forgejo sends plain strings; Gitea-style objects with a
// "name" field are accepted too, so that a server with either shape does not break listing.
type Labels []string

// UnmarshalJSON accepts ["a","b"], [{"name":"a"}] and null.
func (l *Labels) UnmarshalJSON(data []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("labels: %w", err)
	}
	out := make(Labels, 0, len(raw))
	for _, r := range raw {
		var s string
		if err := json.Unmarshal(r, &s); err == nil {
			out = append(out, s)
			continue
		}
		var obj struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(r, &obj); err != nil {
			return fmt.Errorf("labels: element is neither a string nor an object with a name")
		}
		out = append(out, obj.Name)
	}
	*l = out
	return nil
}

// Job is a waiting or running job attempt (modules/structs ActionRunJob).
type Job struct {
	ID      int64    `json:"id"`
	RunID   int64    `json:"run_id"`
	Attempt int64    `json:"attempt"`
	Handle  string   `json:"handle"` // empty for jobs created before the upgrade to Forgejo 15
	RepoID  int64    `json:"repo_id"`
	OwnerID int64    `json:"owner_id"`
	Name    string   `json:"name"`
	HTMLURL string   `json:"html_url"`
	Needs   []string `json:"needs"`
	RunsOn  []string `json:"runs_on"`
	TaskID  int64    `json:"task_id"`
	Status  string   `json:"status"`
}

// Registration is what registering a runner returns; Token is shown by Forgejo only this once.
type Registration struct {
	ID    int64  `json:"id"`
	UUID  string `json:"uuid"`
	Token string `json:"token"`
}

// String keeps the token out of anything that prints a Registration.
func (r Registration) String() string {
	return fmt.Sprintf("{ID:%d UUID:%s Token:%s}", r.ID, r.UUID, redacted)
}

// GoString keeps the token out of %#v.
func (r Registration) GoString() string { return "forgejo.Registration" + r.String() }

// MarshalJSON keeps the token out of structured logs that encode values as JSON; the token is
// meant for a Secret, written field by field.
func (r Registration) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		ID    int64  `json:"id"`
		UUID  string `json:"uuid"`
		Token string `json:"token"`
	}{r.ID, r.UUID, redacted})
}

// ParseRunners decodes a runner list page. A null body is an empty list.
func ParseRunners(data []byte) ([]Runner, error) {
	var rs []Runner
	if err := json.Unmarshal(data, &rs); err != nil {
		return nil, fmt.Errorf("decode runner list: %w", err)
	}
	return rs, nil
}

// ParseRunner decodes one runner.
func ParseRunner(data []byte) (Runner, error) {
	var r Runner
	if err := json.Unmarshal(data, &r); err != nil {
		return Runner{}, fmt.Errorf("decode runner: %w", err)
	}
	if r.ID <= 0 {
		return Runner{}, fmt.Errorf("decode runner: missing id")
	}
	return r, nil
}

// ParseJobs decodes the jobs list; Forgejo encodes "no job" as null, which is an empty list.
func ParseJobs(data []byte) ([]Job, error) {
	var js []Job
	if err := json.Unmarshal(data, &js); err != nil {
		return nil, fmt.Errorf("decode job list: %w", err)
	}
	return js, nil
}

// ParseRegistration decodes the answer to a registration. Its error never quotes the body, which
// holds the runner token.
func ParseRegistration(data []byte) (Registration, error) {
	var reg Registration
	if err := json.Unmarshal(data, &reg); err != nil {
		return Registration{}, fmt.Errorf("decode registration: malformed JSON (%d bytes)", len(data))
	}
	if reg.ID <= 0 || reg.UUID == "" || reg.Token == "" {
		return Registration{}, fmt.Errorf("decode registration: id, uuid or token missing")
	}
	return reg, nil
}

// maxMessageLen caps how much of a server's error message ends up in an error string.
const maxMessageLen = 300

// ParseErrorBody extracts Forgejo's {"message": …} from an error answer, falling back to the
// start of a non-JSON body; control characters are dropped and the length is capped. Secrets are
// not removed here: see redactor.
func ParseErrorBody(data []byte) string {
	var body struct {
		Message string `json:"message"`
		Error   string `json:"error"`
	}
	msg := ""
	if json.Unmarshal(data, &body) == nil {
		msg = body.Message
		if msg == "" {
			msg = body.Error
		}
	} else if !bytes.HasPrefix(bytes.TrimSpace(data), []byte("<")) {
		// Plain text from a proxy is worth showing; an HTML error page is not.
		msg = string(data)
	}
	msg = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, msg)
	msg = strings.Join(strings.Fields(msg), " ")
	if len(msg) > maxMessageLen {
		cut := maxMessageLen
		for cut > 0 && !utf8RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// ParseLinkNext returns the page number of the rel="next" link of a Link header, 0 if there is
// none. Only the page number is taken: the link's host is the server's ROOT_URL, which may not be
// the address the operator reaches it at, and the token must not follow a link elsewhere.
func ParseLinkNext(header string) int {
	for _, part := range splitLinks(header) {
		target, params, ok := strings.Cut(part, ";")
		if !ok {
			continue
		}
		target = strings.TrimSpace(target)
		if !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") {
			continue
		}
		if !hasRel(params, "next") {
			continue
		}
		u, err := url.Parse(target[1 : len(target)-1])
		if err != nil {
			continue
		}
		page, err := strconv.Atoi(u.Query().Get("page"))
		if err != nil || page <= 0 {
			continue
		}
		return page
	}
	return 0
}

// splitLinks splits a Link header on the commas between links, not those inside <…>.
func splitLinks(header string) []string {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(header); i++ {
		switch header[i] {
		case '<':
			depth++
		case '>':
			if depth > 0 {
				depth--
			}
		case ',':
			if depth == 0 {
				parts = append(parts, header[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, header[start:])
}

func hasRel(params, rel string) bool {
	for _, p := range strings.Split(params, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "rel") {
			continue
		}
		for _, r := range strings.Fields(strings.Trim(strings.TrimSpace(v), `"`)) {
			if strings.EqualFold(r, rel) {
				return true
			}
		}
	}
	return false
}

// maxRetryAfter bounds what a server may make a caller wait; beyond it the value is more likely
// a bug than a plan.
const maxRetryAfter = time.Hour

// ParseRetryAfter reads a Retry-After header: delay seconds or an HTTP date, relative to now.
// A date in the past gives zero; unparseable gives false.
func ParseRetryAfter(value string, now time.Time) (time.Duration, bool) {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0, false
	}
	if secs, err := strconv.ParseUint(value, 10, 64); err == nil {
		if secs > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(secs) * time.Second, true
	} else if errors.Is(err, strconv.ErrRange) {
		return maxRetryAfter, true
	}
	t, err := http.ParseTime(value)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	switch {
	case d < 0:
		return 0, true
	case d > maxRetryAfter:
		return maxRetryAfter, true
	}
	return d, true
}

// Version is a parsed Forgejo version such as "15.0.1+gitea-1.22.0".
type Version struct {
	Major, Minor, Patch int
	// Pre is the pre-release part ("dev-123-abcdef"), Meta the build part ("gitea-1.22.0").
	Pre, Meta string
	// Raw is the string the server reported, without surrounding space.
	Raw string
}

func (v Version) String() string { return v.Raw }

// MinimumMajor is the first Forgejo major version with the runner registration API.
const MinimumMajor = 15

var versionPattern = regexp.MustCompile(`^v?(\d{1,6})(?:\.(\d{1,6}))?(?:\.(\d{1,6}))?(?:-([0-9A-Za-z.-]*))?(?:\+([0-9A-Za-z.+-]*))?$`)

// ParseVersion parses Forgejo's version string: MAJOR[.MINOR[.PATCH]][-PRE][+META], with an
// optional leading "v".
func ParseVersion(s string) (Version, error) {
	s = strings.TrimSpace(s)
	m := versionPattern.FindStringSubmatch(s)
	if m == nil {
		return Version{}, fmt.Errorf("parse version %q: not MAJOR.MINOR.PATCH", truncate(s, 64))
	}
	v := Version{Pre: m[4], Meta: m[5], Raw: s}
	v.Major, _ = strconv.Atoi(m[1])
	if m[2] != "" {
		v.Minor, _ = strconv.Atoi(m[2])
	}
	if m[3] != "" {
		v.Patch, _ = strconv.Atoi(m[3])
	}
	return v, nil
}

// CheckVersion parses s and says whether it is Forgejo 15 or later. A pre-release of 15 counts
// as 15: development builds of 15 already serve the registration API. Gitea's 1.x numbers, and
// anything that does not parse, are too old.
func CheckVersion(s string) (Version, error) {
	v, err := ParseVersion(s)
	if err != nil {
		return Version{}, &VersionError{Version: truncate(s, 64), Reason: "not a MAJOR.MINOR.PATCH version"}
	}
	if v.Major < MinimumMajor {
		return v, &VersionError{Version: truncate(v.Raw, 64)}
	}
	return v, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

const redacted = "[REDACTED]"

// minSecretLen: shorter "secrets" are not searched for, since masking every "a" in a message
// would hide more than it protects. Forgejo's tokens are 40 hex digits.
const minSecretLen = 8

// forgejoTokenPattern matches Forgejo's token shape (access and runner tokens: 40 hex digits), so
// that a token the client never knew, echoed by a server, is still masked.
var forgejoTokenPattern = regexp.MustCompile(`\b[0-9a-fA-F]{40}\b`)

// redact removes secrets from s.
func redact(s string, secrets ...string) string {
	for _, sec := range secrets {
		if len(sec) >= minSecretLen {
			s = strings.ReplaceAll(s, sec, redacted)
		}
	}
	return forgejoTokenPattern.ReplaceAllString(s, redacted)
}
