package forgejo_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/forgejo"
)

// pagedRunners serves the instance runner list as Forgejo 15 does: ordered by last contact,
// newest first, paged by offset (page, limit capped at maxLimit), with X-Total-Count. before is
// called before each page is served, to let runners poll or come and go meanwhile.
type pagedRunners struct {
	mu       sync.Mutex
	ids      []int64 // in list order: the runner that last called comes first
	maxLimit int
	before   func(p *pagedRunners, page int)
	pages    int
}

func (p *pagedRunners) poll(id int64) {
	p.ids = slices.DeleteFunc(p.ids, func(x int64) bool { return x == id })
	p.ids = append([]int64{id}, p.ids...)
}

func (p *pagedRunners) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	limit = min(limit, p.maxLimit)
	p.pages++
	if p.before != nil {
		p.before(p, page)
	}
	from := min((page-1)*limit, len(p.ids))
	to := min(from+limit, len(p.ids))
	out := []forgejo.Runner{}
	for _, id := range p.ids[from:to] {
		out = append(out, forgejo.Runner{ID: id, UUID: "uuid-" + strconv.FormatInt(id, 10), Name: "r", Status: "idle"})
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(len(p.ids)))
	_ = json.NewEncoder(w).Encode(out)
}

func newPaged(n, maxLimit int) *pagedRunners {
	p := &pagedRunners{maxLimit: maxLimit}
	for i := range n {
		p.ids = append(p.ids, int64(i+1))
	}
	return p
}

func listAll(t *testing.T, h http.Handler, opts forgejo.ListOptions) ([]int64, error) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := forgejo.New(forgejo.Config{BaseURL: srv.URL, Token: "t0ken-for-listing-tests", Scope: forgejo.GlobalScope()})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := c.ListRunners(t.Context(), opts)
	ids := make([]int64, 0, len(rs))
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	slices.Sort(ids)
	return ids, err
}

func wantIDs(t *testing.T, got []int64, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("listed %d runners, want %d: %v", len(got), n, got)
	}
	for i, id := range got {
		if id != int64(i+1) {
			t.Fatalf("listed %v, want 1..%d", got, n)
		}
	}
}

// A runner that polls while the pages are read moves to the front of the list: the first
// listing repeats one runner and misses another. The listing is taken again until it adds up.
func TestListRunnersIsCompleteWhenRunnersShiftBetweenPages(t *testing.T) {
	p := newPaged(120, 50)
	p.before = func(p *pagedRunners, page int) {
		if p.pages == 2 { // before the second page of the first listing
			p.poll(p.ids[80]) // a runner on page 2 polls: it moves onto page 1, already read
		}
	}
	got, err := listAll(t, p, forgejo.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, got, 120)
	if p.pages <= 3 {
		t.Fatalf("%d pages read: the incomplete first listing was not taken again", p.pages)
	}
}

// A registration created or deleted during every listing: no complete listing can be had.
func TestListRunnersFailsWhenTheTotalKeepsChanging(t *testing.T) {
	p := newPaged(70, 50)
	next := int64(1000)
	p.before = func(p *pagedRunners, page int) {
		if page == 2 {
			next++
			p.ids = append(p.ids, next)
		}
	}
	_, err := listAll(t, p, forgejo.ListOptions{})
	if !errors.Is(err, forgejo.ErrIncompleteListing) {
		t.Fatalf("error %v, want ErrIncompleteListing", err)
	}
}

// A server whose largest page is below 50 (setting.API.MaxResponseItems) is read to the end.
func TestListRunnersFollowsASmallerServerPageSize(t *testing.T) {
	for _, n := range []int{0, 3, 30, 60, 61, 100} {
		p := newPaged(n, 30)
		got, err := listAll(t, p, forgejo.ListOptions{})
		if err != nil {
			t.Fatalf("%d runners: %v", n, err)
		}
		wantIDs(t, got, n)
	}
}

// Forgejo 15 has no filter by uuid: the scope is listed and matched by the client.
func TestListRunnersMatchesUUIDWithoutAServerFilter(t *testing.T) {
	p := newPaged(75, 50)
	var queries []string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.RawQuery)
		p.ServeHTTP(w, r)
	})
	got, err := listAll(t, h, forgejo.ListOptions{UUID: "uuid-60"})
	if err != nil || !slices.Equal(got, []int64{60}) {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, q := range queries {
		if u, _ := urlQuery(q); u.Has("uuid") {
			t.Fatalf("query %q sends a uuid filter Forgejo does not have", q)
		}
	}
}
