// Reference design the maxage cache server replaces: Go net/http with an
// RWMutex-protected map. Same routes and headers as the hot path of
// `maxage cache-server`: GET /v1/keys/{key} (value, content type, ETag, Age)
// and PUT /v1/keys/{key} (store, version bump, JSON answer).
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

type entry struct {
	body        []byte
	contentType string
	version     int64
	filledAt    time.Time
}

type store struct {
	mu sync.RWMutex
	m  map[string]*entry
}

const maxValue = 8 << 20

func (s *store) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/v1/keys/") {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	key := r.URL.Path[len("/v1/keys/"):]
	switch r.Method {
	case http.MethodGet:
		s.mu.RLock()
		e, ok := s.m[key]
		s.mu.RUnlock()
		if !ok {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"code":"key_not_found"}`)
			return
		}
		h := w.Header()
		h.Set("Content-Type", e.contentType)
		h.Set("Etag", "\""+strconv.FormatInt(e.version, 10)+"\"")
		h.Set("Age", strconv.Itoa(int(time.Since(e.filledAt).Seconds())))
		h.Set("Content-Length", strconv.Itoa(len(e.body)))
		w.Write(e.body)
	case http.MethodPut:
		body, err := io.ReadAll(io.LimitReader(r.Body, maxValue+1))
		if err != nil || len(body) > maxValue {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		ct := r.Header.Get("Content-Type")
		if ct == "" {
			ct = "application/octet-stream"
		}
		s.mu.Lock()
		var v int64 = 1
		if old, ok := s.m[key]; ok {
			v = old.version + 1
		}
		s.m[key] = &entry{body: body, contentType: ct, version: v, filledAt: time.Now()}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Etag", "\""+strconv.FormatInt(v, 10)+"\"")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"key":%q,"version":%d,"outcome":"stored"}`, key, v)
	default:
		w.Header().Set("Allow", "GET, PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		panic(err)
	}
	fmt.Printf("listening on http://%s\n", ln.Addr().String())
	srv := &http.Server{Handler: &store{m: make(map[string]*entry)}}
	srv.Serve(ln)
}
