package e2e

// Tests in a real browser: headless Chromium (Debian's chromium, which
// `make deps` installs) driven over the DevTools protocol with chromedp.
// The pages under test are the ones Herald serves (/demo, /admin, with
// /herald.js); a test's own script runs in the page through the DevTools
// protocol, as a developer would in the console.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/heraldrt/herald/internal/testcert"
)

// browserRulesYAML opens the browser tests' channels to authenticated
// users, with presence for the demo's rooms.
const browserRulesYAML = `channels:
  - pattern: "browser_*"
    subscribe: ["authenticated"]
    publish: ["authenticated"]
  - pattern: "demo_room_*"
    subscribe: ["authenticated"]
    publish: ["authenticated"]
    presence: true
    join_leave: true
sse:
  heartbeat: 1s
`

// chromiumPath finds the browser: Debian's chromium, or what
// HERALD_CHROMIUM names.
func chromiumPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("HERALD_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium: `make deps` installs Debian's chromium (or set HERALD_CHROMIUM)")
	return ""
}

// newBrowser starts one headless Chromium for the test, stopped when the
// test ends.
func newBrowser(t testing.TB, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // tests may run as root, where Chromium's sandbox refuses to start
		chromedp.Flag("disable-gpu", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil {
		cancelBrowser()
		cancelAlloc()
		t.Fatalf("start Chromium: %v", err)
	}
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	return bctx
}

// newTab opens a tab in a browser context of its own (its own storage and
// cookies, as another person's browser), closed when the test ends.
func newTab(t testing.TB, browser context.Context) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		t.Fatalf("open a tab: %v", err)
	}
	t.Cleanup(cancel)
	return ctx
}

// do runs steps in tab within d.
func do(t testing.TB, tab context.Context, d time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, d)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

// evalJS evaluates a JavaScript expression in tab (a promise is awaited)
// and decodes its value.
func evalJS[T any](t testing.TB, tab context.Context, js string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %.200s: %v", js, err)
	}
	return v
}

// waitJS polls a JavaScript condition in tab until it is true, failing
// the test with what describe returns when d passes.
func waitJS(t testing.TB, tab context.Context, d time.Duration, cond, describe string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !evalJS[bool](t, tab, "!!("+cond+")") {
		if time.Now().After(deadline) {
			t.Fatalf("after %s, %s is still false: %s", d, cond, evalJS[string](t, tab, describe))
		}
		time.Sleep(50 * time.Millisecond) // polled: the page's state is read over the DevTools protocol
	}
}

// screenshot saves a PNG of the tab as name in the screenshot folder:
// HERALD_SCREENSHOTS, default bin/screenshots in the repository (ignored
// by git; the README's copies in docs/ are taken from there).
func screenshot(t testing.TB, tab context.Context, name string) string {
	t.Helper()
	dir := os.Getenv("HERALD_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join("..", "bin", "screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	if len(png) < 1000 {
		t.Fatalf("screenshot %s is %d bytes", name, len(png))
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// startClientJS starts a herald.js client in the page as window.t, with
// transports, subscribed to channel, recording each message's data.i in
// t.got and every transport it used in t.transports.
func startClientJS(token string, transports []string, channel string, extra string) string {
	tr, _ := json.Marshal(transports)
	return fmt.Sprintf(`(() => {
  const t = window.t = {got: [], transports: [], states: [], resets: 0};
  t.h = Herald.connect(location.origin, {token: %q, transports: %s, minDelay: 100, maxDelay: 1000,
    heartbeat: 1000, connectTimeout: 3000, remember: false %s});
  t.h.on("transport", (n) => t.transports.push(n));
  t.h.on("state", (s) => t.states.push(s));
  t.sub = t.h.subscribe(%q);
  t.sub.on("message", (d) => t.got.push(d.i));
  t.sub.on("reset", () => t.resets++);
  return true;
})()`, token, tr, extra, channel)
}

// browserSetup starts a server with the browser tests' rules, a token
// of user 17 and a browser.
func browserSetup(t testing.TB) (*server, string, context.Context) {
	t.Helper()
	srv := startServer(t, "--config", writeConfig(t, browserRulesYAML))
	token, err := permMint("--sub", "17")
	if err != nil {
		t.Fatal(err)
	}
	return srv, token, newBrowser(t)
}

// openClient opens /demo of base in a tab of its own (it loads
// /herald.js) and runs js there, typically startClientJS.
func openClient(t testing.TB, browser context.Context, base, js string) context.Context {
	t.Helper()
	tab := newTab(t, browser)
	do(t, tab, 30*time.Second, chromedp.Navigate(base+"/demo"))
	evalJS[bool](t, tab, js)
	return tab
}

// gotJS reports what window.t received, for failure messages.
const gotJS = `JSON.stringify({n: t.got.length, last: t.got.slice(-5), transports: t.transports, state: t.h.state, states: t.states.slice(-8), pos: t.sub.position()})`

// checkGot reads window.t.got and checks it is 1..n, each once, in order.
func checkGot(t testing.TB, tab context.Context, n int) {
	t.Helper()
	got := evalJS[[]int](t, tab, "t.got")
	if len(got) != n {
		t.Fatalf("the page got %d messages, want %d", len(got), n)
	}
	for i, v := range got {
		if v != i+1 {
			t.Fatalf("message %d is %d: want 1..%d exactly once, in order (around it: %v)", i+1, v, n, got[max(0, i-3):min(len(got), i+4)])
		}
	}
}

// publishNumbered publishes {"i":from}..{"i":to} to channel with the API
// key, each with an idempotency key, retrying across a restart.
func publishNumbered(t testing.TB, base, channel string, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := from; i <= to; i++ {
		if _, err := publishRetrying(ctx, base, channel, fmt.Sprintf(`{"i":%d}`, i), fmt.Sprintf("%s-%d", channel, i)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

// TestBrowserClientExactlyOnceThroughAKill: herald.js in Chromium, on each
// transport forced and on auto: 500 messages, Herald SIGKILLed and
// restarted after the 250th; the page gets 1..500, each once, in order.
func TestBrowserClientExactlyOnceThroughAKill(t *testing.T) {
	t.Parallel()
	srv, token, browser := browserSetup(t)
	cases := []struct {
		name       string
		transports []string
	}{
		{"ws", []string{"ws"}}, {"sse", []string{"sse"}}, {"poll", []string{"poll"}}, {"auto", []string{"ws", "sse", "poll"}},
	}
	tabs := make([]context.Context, len(cases))
	for i, tc := range cases {
		tabs[i] = openClient(t, browser, srv.url(), startClientJS(token, tc.transports, "browser_"+tc.name, ""))
	}
	for i := range cases {
		waitJS(t, tabs[i], 30*time.Second, `t.h.state === "connected" && t.sub.offset !== null`, gotJS)
	}
	for _, tc := range cases {
		publishNumbered(t, srv.url(), "browser_"+tc.name, 1, 250)
	}
	srv.kill()
	srv.restart()
	for _, tc := range cases {
		publishNumbered(t, srv.url(), "browser_"+tc.name, 251, 500)
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			waitJS(t, tabs[i], 60*time.Second, "t.got.length >= 500", gotJS)
			checkGot(t, tabs[i], 500)
			used := evalJS[[]string](t, tabs[i], "t.transports")
			if want := tc.transports[0]; len(used) == 0 || used[0] != want || strings.Join(used, ",") != strings.Repeat(want+",", len(used)-1)+want {
				t.Fatalf("transports used %v, want only %s", used, want)
			}
		})
	}
}

// TestBrowserClientThroughABadNetwork: herald.js in Chromium on each
// transport through the fault proxy of the Go client's test (latency and
// jitter, 1 MB/s, small slices, both directions, every connection reset
// after 0.3–1.5 s), and on WebSocket and SSE the stream frozen open
// mid-way: the page gets 1..300 once, in order, and drops the frozen
// stream for its silence (no heartbeat for twice the heartbeat).
func TestBrowserClientThroughABadNetwork(t *testing.T) {
	t.Parallel()
	srv, token, browser := browserSetup(t)
	for _, tr := range []string{"ws", "sse", "poll"} {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			const n = 300
			ch := "browser_badnet_" + tr
			px := startFaultProxy(t, srv.addr)
			px.calm.Store(true) // the page itself loads on a calm network
			tab := openClient(t, browser, px.url(), "true")
			px.calm.Store(false)
			evalJS[bool](t, tab, startClientJS(token, []string{tr}, ch, ", connectTimeout: 5000"))
			evalJS[bool](t, tab, `(() => { t.drops = []; t.h.on("disconnected", (e) => t.drops.push(e.reason)); return true; })()`)
			waitJS(t, tab, 60*time.Second, `t.h.state === "connected" && t.sub.offset !== null`, gotJS)
			publishNumbered(t, srv.url(), ch, 1, n/2)
			waitJS(t, tab, 60*time.Second, fmt.Sprintf("t.got.length >= %d", n/2), gotJS)
			frozen := 0
			if tr != "poll" {
				// Freeze what is open; if the stream was between two
				// connections just then, freeze again.
				for try := 0; ; try++ {
					waitJS(t, tab, 30*time.Second, `t.h.state === "connected"`, gotJS)
					frozen += px.stall()
					if try == 4 {
						waitJS(t, tab, 10*time.Second, `t.drops.includes("silent")`, gotJS+`+" drops "+JSON.stringify(t.drops)`)
						break
					}
					if evalJS[bool](t, tab, `new Promise((ok) => { const t0 = Date.now(); const f = () => t.drops.includes("silent") ? ok(true) : Date.now() - t0 > 5000 ? ok(false) : setTimeout(f, 50); f(); })`) {
						break
					}
				}
			}
			publishNumbered(t, srv.url(), ch, n/2+1, n)
			waitJS(t, tab, 90*time.Second, fmt.Sprintf("t.got.length >= %d", n), gotJS)
			checkGot(t, tab, n)
			if px.resets.Load() == 0 {
				t.Fatal("the proxy reset no connection: the test did not test resets")
			}
			t.Logf("%s: %d messages once, in order, through %d resets and %d frozen connections; drops %v", tr, n, px.resets.Load(), frozen,
				evalJS[[]string](t, tab, "t.drops.slice(0, 12)"))
		})
	}
}

// TestDemoChatBetweenTwoBrowsers: /demo in two browser contexts (alice
// and bob, dev mode's demo tokens): each sees the other in "Here now",
// bob sees "alice is typing…" while she types, each gets the other's
// messages once; alice switches to SSE mid-conversation and misses
// nothing. Screenshots of both pages go to the screenshot folder.
func TestDemoChatBetweenTwoBrowsers(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--dev", "--config", writeConfig(t, browserRulesYAML))
	browser := newBrowser(t)
	alice, bob := newTab(t, browser), newTab(t, browser)
	do(t, alice, 30*time.Second, chromedp.Navigate(srv.url()+"/demo?user=alice&room=general"))
	do(t, bob, 30*time.Second, chromedp.Navigate(srv.url()+"/demo?user=bob&room=general"))
	const state = `JSON.stringify({status: document.getElementById("status").dataset.state, members: document.getElementById("members").textContent,
		typing: document.getElementById("typing").textContent, messages: document.getElementById("messages").textContent, transport: document.getElementById("transport-name").textContent})`
	for _, tab := range []context.Context{alice, bob} {
		waitJS(t, tab, 30*time.Second, `document.getElementById("status").dataset.state === "connected" && demo.sub && demo.sub.offset !== null`, state)
	}
	waitJS(t, alice, 30*time.Second, `document.getElementById("members").textContent.includes("bob")`, state)
	waitJS(t, bob, 30*time.Second, `document.getElementById("members").textContent.includes("alice")`, state)

	do(t, alice, 10*time.Second, chromedp.SendKeys(chromedp.ID("text"), "hello"))
	waitJS(t, bob, 30*time.Second, `document.getElementById("typing").textContent.includes("alice is typing")`, state)
	do(t, alice, 10*time.Second, chromedp.Click(chromedp.ID("send")))
	waitJS(t, bob, 30*time.Second, `[...document.querySelectorAll("#messages li.msg")].some((li) => li.textContent.startsWith("alicehello"))`, state)
	waitJS(t, bob, 30*time.Second, `!document.getElementById("typing").textContent.includes("alice")`, state)

	// alice moves to SSE; bob keeps talking meanwhile.
	evalJS[bool](t, alice, `(() => { const s = document.getElementById("transport"); s.value = "sse"; s.dispatchEvent(new Event("change")); return true; })()`)
	for i := 1; i <= 5; i++ {
		do(t, bob, 10*time.Second, chromedp.SendKeys(chromedp.ID("text"), fmt.Sprintf("reply %d", i)), chromedp.Click(chromedp.ID("send")))
	}
	waitJS(t, alice, 30*time.Second, `document.getElementById("transport-name").textContent === "sse" && [...document.querySelectorAll("#messages li.msg")].filter((li) => li.textContent.startsWith("bobreply")).length >= 5`, state)
	got := evalJS[[]string](t, alice, `[...document.querySelectorAll("#messages li.msg")].map((li) => li.firstChild.textContent + ":" + li.childNodes[1].textContent)`)
	want := []string{"alice:hello", "bob:reply 1", "bob:reply 2", "bob:reply 3", "bob:reply 4", "bob:reply 5"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("alice's page shows %q, want %q (each once, in order)", got, want)
	}
	waitJS(t, alice, 10*time.Second, `document.getElementById("members").textContent.includes("bob")`, state)
	screenshot(t, alice, "demo.png")
	screenshot(t, bob, "demo-bob.png")
}

// TestAdminDashboardMatchesMetrics: /admin, signed in with the API key,
// shows the connections per transport and the messages published as
// /metrics counts them while 50 SSE clients connect and 30 messages are
// published; its channel panel shows the channel's subscribers and
// history; a user disconnected from it loses their streams.
func TestAdminDashboardMatchesMetrics(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--config", writeConfig(t, browserRulesYAML))
	browser := newBrowser(t)
	tab := newTab(t, browser)
	do(t, tab, 30*time.Second, chromedp.Navigate(srv.url()+"/admin"),
		chromedp.SendKeys(chromedp.ID("key"), apiKey), chromedp.Click(chromedp.CSS("#login button")))
	const state = `JSON.stringify({last: admin.last, updated: document.getElementById("updated").textContent,
		sse: document.getElementById("conn-sse").textContent, total: document.getElementById("conn-total").textContent})`
	waitJS(t, tab, 30*time.Second, `admin.last !== null`, state)

	// Two users, 25 streams each (a user may hold 32 connections).
	var tokens [2]string
	for i, sub := range []string{"42", "43"} {
		var err error
		if tokens[i], err = permMint("--sub", sub); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for i := range 50 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.url()+"/sse?channel=browser_admin", nil)
		req.Header.Set("Authorization", "Bearer "+tokens[i%2])
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("SSE client %d: %v %v", i, err, resp)
		}
		t.Cleanup(func() { resp.Body.Close() })
		go func() { _, _ = io.Copy(io.Discard, resp.Body) }() // ends when the body is closed
	}
	waitSubscribers(t, srv.url(), "browser_admin", 50)
	publishNumbered(t, srv.url(), "browser_admin", 1, 30)

	waitJS(t, tab, 30*time.Second, `document.getElementById("conn-sse").textContent === "50" && Number(document.getElementById("msg-in-total").textContent) >= 30`, state)
	metrics := scrapeMetrics(t, srv.url(), "")
	for _, c := range []struct{ id, name, transport string }{
		{"conn-sse", "herald_sessions", "sse"}, {"conn-ws", "herald_sessions", "ws"}, {"conn-poll", "herald_sessions", "poll"},
		{"msg-in-total", "herald_messages_published_total", ""},
	} {
		labels := map[string]string{}
		if c.transport != "" {
			labels["transport"] = c.transport
		}
		want := metricSum(metrics, c.name, labels)
		shown := evalJS[string](t, tab, `document.getElementById("`+c.id+`").textContent`)
		if shown != strconv.FormatFloat(want, 'f', -1, 64) {
			t.Errorf("#%s shows %s, /metrics has %s%v = %v", c.id, shown, c.name, labels, want)
		}
	}

	// The channel panel: subscribers in the list, then its history.
	waitJS(t, tab, 30*time.Second, `[...document.querySelectorAll("#channels tr")].some((tr) => tr.textContent === "browser_admin3050")`,
		`document.getElementById("channels").textContent`)
	do(t, tab, 10*time.Second, chromedp.SendKeys(chromedp.ID("channel"), "browser_admin"), chromedp.Click(chromedp.CSS("#search button")))
	waitJS(t, tab, 20*time.Second, `document.querySelectorAll("#history li").length === 20 && document.querySelector("#history li").textContent.startsWith("#30 message {\"i\":30}")`,
		`document.getElementById("history").textContent`)
	screenshot(t, tab, "admin.png")

	// Disconnect user 42 from the dashboard: their 25 streams end.
	do(t, tab, 10*time.Second, chromedp.SendKeys(chromedp.ID("mod-user"), "42"), chromedp.Click(chromedp.CSS(`#moderate button[data-act="disconnect"]`)))
	waitJS(t, tab, 20*time.Second, `document.getElementById("mod-result").textContent.startsWith("disconnect 42")`, `document.getElementById("mod-result").textContent`)
	waitJS(t, tab, 30*time.Second, `document.getElementById("conn-sse").textContent === "25"`, state)
}

// TestBrowserManySSEStreamsOverHTTP2: over TLS the page and its streams
// use HTTP/2, so one page holds 20 SSE streams (herald.js clients on sse)
// to one origin, all live at once — over HTTP/1.1 Chromium opens six
// connections to an origin and the seventh stream would wait.
func TestBrowserManySSEStreamsOverHTTP2(t *testing.T) {
	t.Parallel()
	cert, key, _ := testcert.Write(t, t.TempDir(), 1)
	srv := &server{t: t, addr: freeAddr(t), dataDir: t.TempDir(), https: true,
		args: []string{"--config", writeConfig(t, browserRulesYAML), "--tls-cert", cert, "--tls-key", key}}
	srv.start()
	t.Cleanup(srv.stop)
	token, err := permMint("--sub", "17")
	if err != nil {
		t.Fatal(err)
	}
	tab := newTab(t, newBrowser(t, chromedp.Flag("ignore-certificate-errors", true)))
	do(t, tab, 30*time.Second, chromedp.Navigate(srv.url()+"/demo"))
	if proto := evalJS[string](t, tab, `performance.getEntriesByType("resource").find((e) => e.name.endsWith("/herald.js")).nextHopProtocol`); proto != "h2" {
		t.Fatalf("/herald.js came over %q, want h2", proto)
	}
	const streams = 20
	evalJS[bool](t, tab, fmt.Sprintf(`(() => {
  window.s = [];
  for (let i = 0; i < %d; i++) {
    const h = Herald.connect(location.origin, {token: %q, transports: ["sse"], remember: false});
    const sub = h.subscribe("browser_h2_" + i);
    const one = {h, sub, got: []};
    sub.on("message", (d) => one.got.push(d.i));
    s.push(one);
  }
  return true;
})()`, streams, token))
	const state = `JSON.stringify(s.map((x) => x.h.state + ":" + x.sub.offset + ":" + x.got.length))`
	waitJS(t, tab, 60*time.Second, `s.every((x) => x.h.state === "connected" && x.sub.offset !== null)`, state)
	for i := range streams {
		body := fmt.Sprintf(`{"channel":"browser_h2_%d","data":{"i":%d}}`, i, i)
		req, _ := http.NewRequest(http.MethodPost, srv.url()+"/api/publish", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := srv.client().Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("publish %d: %v %v", i, err, resp)
		}
		resp.Body.Close()
	}
	waitJS(t, tab, 60*time.Second, `s.every((x, i) => x.got.length === 1 && x.got[0] === i)`, state)
}

// TestBrowserFallsBackBehindProxies: a page behind a real nginx that
// strips the WebSocket upgrade lands on SSE; behind one that also
// buffers SSE it lands on long polling. Both get 1..200 exactly once, in
// order, while publishing goes on — and while the second one, every two
// seconds, tries the better transports again and comes back to polling.
func TestBrowserFallsBackBehindProxies(t *testing.T) {
	t.Parallel()
	bin := findNginx(t)
	srv := startServer(t, "--config", writeConfig(t, browserRulesYAML))
	px := startNginx(t, bin, srv)
	token, err := permMint("--sub", "17")
	if err != nil {
		t.Fatal(err)
	}
	browser := newBrowser(t)
	cases := []struct {
		name, prefix, want string
	}{
		{"upgrade_stripped", "", "sse"},
		{"sse_buffered", "/buffered", "poll"},
	}
	tabs := make([]context.Context, len(cases))
	for i, tc := range cases {
		tabs[i] = newTab(t, browser)
		do(t, tabs[i], 30*time.Second, chromedp.Navigate(px.url()+"/demo"))
		js := startClientJS(token, []string{"ws", "sse", "poll"}, "browser_px_"+tc.name, ", upgradeAfter: 2000")
		js = strings.Replace(js, "Herald.connect(location.origin,", fmt.Sprintf("Herald.connect(location.origin + %q,", tc.prefix), 1)
		evalJS[bool](t, tabs[i], js)
	}
	for i, tc := range cases {
		waitJS(t, tabs[i], 60*time.Second, `t.h.state === "connected" && t.h.transport === "`+tc.want+`" && t.sub.offset !== null`, gotJS)
	}
	for n := 1; n <= 200; n++ {
		for _, tc := range cases {
			publishNumbered(t, srv.url(), "browser_px_"+tc.name, n, n)
		}
		time.Sleep(25 * time.Millisecond) // paces the publisher over the upgrade attempts; not a synchronisation
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			waitJS(t, tabs[i], 60*time.Second, "t.got.length >= 200", gotJS)
			checkGot(t, tabs[i], 200)
			used := evalJS[[]string](t, tabs[i], "t.transports")
			if len(used) != 1 || used[0] != tc.want {
				t.Fatalf("transports used %v, want only %s", used, tc.want)
			}
			if tc.want == "poll" {
				// It tried the better transports again meanwhile, and came back.
				if n := evalJS[int](t, tabs[i], `t.states.filter((s) => s === "connecting").length`); n < 2 {
					t.Fatalf("%d connection attempts: the upgrade was never tried (%s)", n, evalJS[string](t, tabs[i], gotJS))
				}
			}
		})
	}
}

// TestBrowserDetectsAStalledServer: the server is stopped (SIGSTOP): its
// sockets stay open and nothing arrives. A client on SSE and one on auto
// (WebSocket) each take the silence for a dead connection within twice
// the heartbeat and try again; the auto client, finding the WebSocket
// silent too, moves on to the next transport. After SIGCONT both get
// every message once, in order — the auto one on another transport than
// it started on.
func TestBrowserDetectsAStalledServer(t *testing.T) {
	t.Parallel()
	srv, token, browser := browserSetup(t)
	cases := []struct {
		name       string
		transports []string
	}{{"sse", []string{"sse"}}, {"auto", []string{"ws", "sse", "poll"}}}
	tabs := make([]context.Context, len(cases))
	for i, tc := range cases {
		tabs[i] = openClient(t, browser, srv.url(), startClientJS(token, tc.transports, "browser_stall_"+tc.name, ", connectTimeout: 1500"))
		evalJS[bool](t, tabs[i], `(() => { t.h.on("disconnected", (e) => { if (!t.dropped) t.dropped = {at: Date.now(), reason: e.reason}; }); return true; })()`)
	}
	for i := range cases {
		waitJS(t, tabs[i], 30*time.Second, `t.h.state === "connected" && t.sub.offset !== null`, gotJS)
	}
	for _, tc := range cases {
		publishNumbered(t, srv.url(), "browser_stall_"+tc.name, 1, 50)
	}
	for i := range cases {
		waitJS(t, tabs[i], 30*time.Second, "t.got.length >= 50", gotJS)
		evalJS[bool](t, tabs[i], "(t.stoppedAt = Date.now(), true)")
	}
	if err := pauseProcess(srv.cmd.Process); err != nil {
		t.Fatal(err)
	}
	stopped := true
	t.Cleanup(func() {
		if stopped {
			_ = resumeProcess(srv.cmd.Process)
		}
	})
	for i, tc := range cases {
		waitJS(t, tabs[i], 30*time.Second, "t.dropped", gotJS)
		reason := evalJS[string](t, tabs[i], "t.dropped.reason")
		after := evalJS[int](t, tabs[i], "t.dropped.at - t.stoppedAt")
		t.Logf("%s: the stalled connection was dropped %d ms after the server stopped (heartbeat 1000 ms)", tc.name, after)
		if reason != "silent" {
			t.Fatalf("%s: dropped for %q, want silent (the socket stays open)", tc.name, reason)
		}
	}
	// The auto client, its WebSocket attempt silent too, tries another.
	waitJS(t, tabs[1], 30*time.Second, `t.h._conn && t.h._conn.name !== "ws"`, gotJS)
	if err := resumeProcess(srv.cmd.Process); err != nil {
		t.Fatal(err)
	}
	stopped = false
	for _, tc := range cases {
		publishNumbered(t, srv.url(), "browser_stall_"+tc.name, 51, 100)
	}
	for i, tc := range cases {
		waitJS(t, tabs[i], 60*time.Second, "t.got.length >= 100", gotJS)
		checkGot(t, tabs[i], 100)
		if tc.name == "auto" {
			used := evalJS[[]string](t, tabs[i], "t.transports")
			if len(used) < 2 || used[0] != "ws" || used[len(used)-1] == "ws" {
				t.Fatalf("auto used %v: want ws first, then another transport after the stall", used)
			}
		}
	}
}

// TestBrowserRefreshesItsToken: with getToken and a token that expires in
// 35 s, herald.js asks for a new one 30 s before expiry and hands it to
// its open WebSocket (the refresh op), which stays connected.
func TestBrowserRefreshesItsToken(t *testing.T) {
	t.Parallel()
	srv, _, browser := browserSetup(t)
	var tokens []string
	for range 3 {
		tok, err := permMint("--sub", "17", "--ttl", "35s")
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, tok)
	}
	list, _ := json.Marshal(tokens)
	tab := openClient(t, browser, srv.url(), fmt.Sprintf(`(() => {
  const t = window.t = {asked: 0, drops: 0, refreshed: [], errors: []};
  const tokens = %s;
  t.h = Herald.connect(location.origin, {transports: ["ws"], remember: false, getToken: async () => tokens[Math.min(t.asked++, tokens.length - 1)]});
  t.h.on("disconnected", () => t.drops++);
  t.h.on("token", (e) => t.refreshed.push(e.expires));
  t.h.on("error", (e) => t.errors.push(e.message));
  t.sub = t.h.subscribe("browser_refresh");
  return true;
})()`, list))
	waitJS(t, tab, 30*time.Second, `t.h.state === "connected"`, `JSON.stringify({state: t.h.state, asked: t.asked})`)
	// The refresh is due 5 s after the first token was minted.
	waitJS(t, tab, 30*time.Second, `t.refreshed.length >= 1 || t.errors.length > 0`, `JSON.stringify({state: t.h.state, asked: t.asked, drops: t.drops})`)
	if errs := evalJS[[]string](t, tab, "t.errors"); len(errs) > 0 {
		t.Fatalf("the refresh failed: %v", errs)
	}
	// The server took the new token: the refresh op's answer is its expiry.
	expires, err := time.Parse(time.RFC3339, evalJS[string](t, tab, "t.refreshed[0]"))
	if err != nil || !expires.After(time.Now()) {
		t.Fatalf("refresh answered expires %v (%v): want the new token's, in the future", expires, err)
	}
	// The refreshed connection is the same one and still serves.
	publishNumbered(t, srv.url(), "browser_refresh", 1, 1)
	evalJS[bool](t, tab, `(t.sub.on("message", () => t.got = true), true)`)
	publishNumbered(t, srv.url(), "browser_refresh", 2, 2)
	waitJS(t, tab, 30*time.Second, `t.got === true`, `JSON.stringify({state: t.h.state, asked: t.asked, drops: t.drops})`)
	if drops := evalJS[int](t, tab, "t.drops"); drops != 0 {
		t.Fatalf("the WebSocket dropped %d times around the refresh", drops)
	}
}

// TestBrowserSubscribesWhileConnecting: a channel subscribed while the
// connection is being made (after its request left) is streamed too, on
// each transport.
func TestBrowserSubscribesWhileConnecting(t *testing.T) {
	t.Parallel()
	srv, token, browser := browserSetup(t)
	for _, tr := range []string{"ws", "sse", "poll"} {
		tab := openClient(t, browser, srv.url(), fmt.Sprintf(`(() => {
  const t = window.t = {got: []};
  t.h = Herald.connect(location.origin, {token: %q, transports: [%q], remember: false});
  t.h.subscribe("browser_late_a_%[2]s");
  t.h.on("state", (s) => {
    if (s === "connecting" && !t.b) setTimeout(() => { t.b = t.h.subscribe("browser_late_b_%[2]s"); t.b.on("message", (d) => t.got.push(d.i)); }, 0);
  });
  return true;
})()`, token, tr))
		waitJS(t, tab, 30*time.Second, `t.h.state === "connected" && t.b && t.b.offset !== null`, `JSON.stringify({state: t.h.state, b: !!t.b})`)
		publishNumbered(t, srv.url(), "browser_late_b_"+tr, 1, 3)
		waitJS(t, tab, 30*time.Second, `t.got.length >= 3`, `JSON.stringify(t.got)`)
		if got := evalJS[[]int](t, tab, "t.got"); fmt.Sprint(got) != "[1 2 3]" {
			t.Fatalf("%s: got %v, want [1 2 3]", tr, got)
		}
	}
}
