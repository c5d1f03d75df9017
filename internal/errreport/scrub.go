package errreport

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/getsentry/sentry-go"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
)

// redacted replaces whatever looks like a secret.
const redacted = "[redacted]"

// withheld replaces Forgejo's own message (the body of its error answer) in an event.
const withheld = "[Forgejo's message withheld]"

var (
	// hexToken: Forgejo's API tokens and runner tokens are 40 hex digits. Commit hashes look the
	// same and are redacted too: an event never needs one to be understood.
	hexToken = regexp.MustCompile(`\b[0-9a-fA-F]{32,}\b`)
	// jwt: an OIDC or service account token.
	jwt = regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*`)
	// authScheme: an Authorization header's credentials quoted in an error.
	authScheme = regexp.MustCompile(`(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}`)
	// authHeader: everything after "Authorization:" up to the end of the clause.
	authHeader = regexp.MustCompile(`(?i)\b(authorization\s*[:=]\s*)[^\n,;]+`)
	// sensitiveValue: the value of a sensitive key, as key=value, key: value or JSON "key":"value".
	sensitiveValue = regexp.MustCompile(`(?i)\b((?:[a-z]+[_-])?(?:token|secret|password|passwd|api[_-]?key|apikey|credentials?|private[_-]?key|dsn))("?\s*[:=]\s*"?)([^\s",}&;]+)`)
	// userinfo: credentials in a URL, https://user:pass@host or a DSN's https://key@host.
	userinfo = regexp.MustCompile(`(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@`)
	// privateKey: a PEM private key block.
	privateKey = regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)`)
	// forgejoAnswer: a Forgejo REST error as forgejo.APIError prints it, found in a text that has
	// lost its type (formatted with %v, or a panic value); everything after the status is cut.
	forgejoAnswer = regexp.MustCompile(`(forgejo (?:GET|POST|PUT|PATCH|DELETE) \S+ \([^)]*\): \d{3})\b.*`)
)

// sensitiveKey says whether a tag or context key names a secret.
var sensitiveKey = regexp.MustCompile(`(?i)token|secret|password|passwd|api[_-]?key|credential|private[_-]?key|authorization|cookie|dsn`)

// redact replaces secrets in s.
func redact(s string) string {
	s = privateKey.ReplaceAllString(s, redacted)
	s = authHeader.ReplaceAllString(s, "${1}"+redacted)
	s = authScheme.ReplaceAllString(s, "${1} "+redacted)
	s = userinfo.ReplaceAllString(s, "${1}"+redacted+"@")
	s = sensitiveValue.ReplaceAllString(s, "${1}${2}"+redacted)
	s = jwt.ReplaceAllString(s, redacted)
	s = hexToken.ReplaceAllString(s, redacted)
	return s
}

// summarize is the text an event shows for err: its message with Forgejo's own words withheld
// and secrets redacted. forgejo.APIError keeps what Forgejo answered (redacted of the client's
// own tokens, but still a response body, which may quote anything); for a 403 the kind of
// refusal and the token scopes it names are kept, as they say what to fix.
func summarize(err error) string {
	text := err.Error()
	apiErrs := apiErrors(err, nil, 0)
	for _, e := range apiErrs {
		if e.Message == "" {
			continue
		}
		say := withheld
		if d, ok := forgejo.Deny(e); ok {
			say = fmt.Sprintf("[Forgejo's message withheld; refusal %s%s]", d.Kind, strings.TrimRight(" "+strings.Join(d.Scopes, " "), " "))
		}
		text = strings.ReplaceAll(text, strconv.Quote(e.Message), strconv.Quote(say))
		text = strings.ReplaceAll(text, e.Message, say)
	}
	if len(apiErrs) == 0 {
		text = forgejoAnswer.ReplaceAllString(text, "${1} [details withheld]")
	}
	return redact(text)
}

// apiErrors collects the forgejo.APIErrors anywhere in err's tree.
func apiErrors(err error, acc []*forgejo.APIError, depth int) []*forgejo.APIError {
	if err == nil || depth > 32 {
		return acc
	}
	var apiErr *forgejo.APIError
	if errors.As(err, &apiErr) && !containsErr(acc, apiErr) {
		acc = append(acc, apiErr)
	}
	switch u := err.(type) { //nolint:errorlint // walks the tree by hand, one level at a time
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			acc = apiErrors(e, acc, depth+1)
		}
	case interface{ Unwrap() error }:
		acc = apiErrors(u.Unwrap(), acc, depth+1)
	}
	return acc
}

func containsErr(list []*forgejo.APIError, e *forgejo.APIError) bool {
	for _, x := range list {
		if x == e {
			return true
		}
	}
	return false
}

// scrubEvent is the client's BeforeSend: the last look at every event before it leaves. It keeps
// no request, user, breadcrumb or source line, and redacts every string that could carry a
// secret, whoever built the event.
func scrubEvent(event *sentry.Event, _ *sentry.EventHint) *sentry.Event {
	event.Request = nil
	event.User = sentry.User{}
	event.Breadcrumbs = nil
	event.Attachments = nil
	event.Message = redact(event.Message)
	event.Transaction = redact(event.Transaction)
	for k, v := range event.Tags {
		if sensitiveKey.MatchString(k) {
			delete(event.Tags, k)
			continue
		}
		event.Tags[k] = redact(v)
	}
	for name, c := range event.Contexts {
		event.Contexts[name] = scrubContext(c)
	}
	for i := range event.Exception {
		e := &event.Exception[i]
		e.Type = redact(e.Type)
		e.Value = forgejoAnswerIfUntyped(redact(e.Value))
		scrubStack(e.Stacktrace)
		if e.Mechanism != nil {
			e.Mechanism.Data = nil
		}
	}
	for i := range event.Threads {
		scrubStack(event.Threads[i].Stacktrace)
	}
	return event
}

// forgejoAnswerIfUntyped cuts a Forgejo answer that summarize did not see (an event built
// elsewhere); one summarize built carries its withheld marker and is left alone.
func forgejoAnswerIfUntyped(s string) string {
	if strings.Contains(s, "withheld") {
		return s
	}
	return forgejoAnswer.ReplaceAllString(s, "${1} [details withheld]")
}

func scrubContext(c sentry.Context) sentry.Context {
	out := sentry.Context{}
	for k, v := range c {
		if sensitiveKey.MatchString(k) {
			continue
		}
		switch v := v.(type) {
		case string:
			out[k] = redact(v)
		case map[string]any:
			out[k] = scrubContext(v)
		default:
			out[k] = v
		}
	}
	return out
}

// scrubStack drops source lines and variables: source is no place for secrets, but a test's or a
// debug build's might hold one, and the event needs only function, file and line.
func scrubStack(st *sentry.Stacktrace) {
	if st == nil {
		return
	}
	for i := range st.Frames {
		f := &st.Frames[i]
		f.PreContext, f.ContextLine, f.PostContext, f.Vars = nil, "", nil, nil
	}
}
