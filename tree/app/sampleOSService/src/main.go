// sampleOSService is the demo HTTP service shipped in sampleOS images.
// Standard library only, so it builds offline with Go 1.19 and later.
package main

import (
	"fmt"
	"log"
	"math/rand"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

var fortunes = []string{
	"You will boot from the active image today.",
	"A passive image is a friend in need.",
	"Immutable roots bear reliable fruit.",
	"An upgrade is coming your way.",
	"The recovery partition is always there for you.",
	"Persistence lives in /usr/local.",
	"Good things come to those who reconcile.",
}

// A locally seeded source: the global one is not seeded before Go 1.20.
var (
	rngMu sync.Mutex
	rng   = rand.New(rand.NewSource(time.Now().UnixNano()))
)

func randomFortune() string {
	rngMu.Lock()
	defer rngMu.Unlock()
	return fortunes[rng.Intn(len(fortunes))]
}

const fortuneTellerPage = `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>sampleOS fortune teller</title></head>
<body>
<h1>sampleOS fortune teller</h1>
<p id="fortune">Consulting the oracle...</p>
<button onclick="tell()">Another one</button>
<script>
function tell() {
  fetch('/fortune')
    .then(function (r) { return r.text(); })
    .then(function (t) { document.getElementById('fortune').textContent = t; })
    .catch(function (e) { document.getElementById('fortune').textContent = 'error: ' + e; });
}
tell();
</script>
</body>
</html>
`

// getOnly rejects anything but GET/HEAD; the 1.19 mux has no method patterns.
func getOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h(w, r)
	}
}

func textPlain(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
}

func hello(w http.ResponseWriter, r *http.Request) {
	textPlain(w)
	fmt.Fprint(w, "hello")
}

func headers(w http.ResponseWriter, r *http.Request) {
	// net/http moves Host out of r.Header; put it back so the echo is complete.
	lines := []string{"Host: " + r.Host}
	for name, values := range r.Header {
		for _, v := range values {
			lines = append(lines, name+": "+v)
		}
	}
	sort.Strings(lines)
	textPlain(w)
	fmt.Fprint(w, strings.Join(lines, "\n")+"\n")
}

func fortune(w http.ResponseWriter, r *http.Request) {
	textPlain(w)
	fmt.Fprintln(w, randomFortune())
}

func fortuneTeller(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprint(w, fortuneTellerPage)
}

// statusRecorder remembers the status code for the access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		log.Printf("%s %s %s %d %s", r.RemoteAddr, r.Method, r.URL.RequestURI(), rec.status, time.Since(start))
	})
}

func main() {
	log.SetOutput(os.Stdout) // journald picks stdout up under systemd
	port := os.Getenv("PORT")
	if port == "" {
		port = "8090"
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/hello", getOnly(hello))
	mux.HandleFunc("/headers", getOnly(headers))
	mux.HandleFunc("/fortune", getOnly(fortune))
	mux.HandleFunc("/fortuneteller", getOnly(fortuneTeller))

	// HOST (optional) restricts the bind address, e.g. 127.0.0.1 for tests.
	addr := os.Getenv("HOST") + ":" + port
	log.Printf("sampleOSService listening on %s", addr)
	srv := &http.Server{
		Addr:              addr,
		Handler:           logRequests(mux),
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Fatal(srv.ListenAndServe())
}
