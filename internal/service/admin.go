package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// check is one dependency behind /readyz.
type check struct {
	name string
	fn   func(context.Context) error
}

type admin struct {
	mux       *http.ServeMux
	rd        *readiness
	srv       *http.Server
	stopWatch chan struct{}
	wg        sync.WaitGroup
	serveErr  error
	stopOnce  sync.Once
}

// shutdown stops the readiness watcher and the server, waiting for both.
// Safe to call twice.
func (a *admin) shutdown(ctx context.Context) error {
	var err error
	a.stopOnce.Do(func() {
		close(a.stopWatch)
		err = a.srv.Shutdown(ctx)
		a.wg.Wait()
		err = errors.Join(err, a.serveErr)
	})
	return err
}

func newRegistry(binary, instance string) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "dtx_build_info",
		Help:        "Always 1; labels name the binary, its version and the replica.",
		ConstLabels: prometheus.Labels{"binary": binary, "version": version(), "instance": instance},
	})
	info.Set(1)
	r.MustRegister(info)
	return r
}

// readiness runs the dependency checks of /readyz.
type readiness struct {
	mu     sync.Mutex
	checks []check
	// pending are the checks that have not run yet, each with the reason
	// /readyz shows for it: the process's start-up (startupCheck) and the
	// checks the work loop declared (App.ReadyChecksFunc) and has not added
	// yet. Each keeps the process not ready.
	pending  map[string]string
	timeout  time.Duration
	draining *atomic.Bool
	ready    chan struct{}
	once     sync.Once
	up       *prometheus.GaugeVec
	log      *slog.Logger
	wasReady atomic.Bool
}

type readyReport struct {
	Ready    bool              `json:"ready"`
	Draining bool              `json:"draining,omitempty"`
	Checks   map[string]string `json:"checks"`
}

// notCheckedYet is the reason /readyz shows for a declared check the work
// loop has not added yet.
const notCheckedYet = "not checked yet: the work loop is starting"

// startupCheck is the pending check that keeps the process not ready until
// its start-up (migrations, when enabled) is done and the work loop started.
const startupCheck = "startup"

// setPending marks name as pending with reason: not ready until add or
// clearPending.
func (r *readiness) setPending(name, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending[name] = reason
}

// clearPending removes the pending mark of name.
func (r *readiness) clearPending(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.pending, name)
}

// add adds a check, or replaces the one of the same name.
func (r *readiness) add(c check) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.pending, c.name)
	for i := range r.checks {
		if r.checks[i].name == c.name {
			r.checks[i] = c
			return
		}
	}
	r.checks = append(r.checks, c)
}

func (r *readiness) evaluate(ctx context.Context) readyReport {
	r.mu.Lock()
	checks := slices.Clone(r.checks)
	rep := readyReport{Ready: true, Checks: make(map[string]string, len(checks)+len(r.pending))}
	for name, reason := range r.pending {
		rep.Ready = false
		rep.Checks[name] = reason
	}
	r.mu.Unlock()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, r.timeout)
			defer cancel()
			err := c.fn(cctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rep.Ready = false
				rep.Checks[c.name] = err.Error()
				r.up.WithLabelValues(c.name).Set(0)
				return
			}
			rep.Checks[c.name] = "ok"
			r.up.WithLabelValues(c.name).Set(1)
		})
	}
	wg.Wait()
	if r.draining.Load() {
		rep.Ready, rep.Draining = false, true
	}
	if rep.Ready {
		r.once.Do(func() { close(r.ready) })
	}
	if was := r.wasReady.Swap(rep.Ready); was != rep.Ready {
		if rep.Ready {
			r.log.Info("ready", "checks", rep.Checks)
		} else {
			r.log.Warn("not ready", "draining", rep.Draining, "checks", rep.Checks)
		}
	}
	return rep
}

func (r *readiness) serveHTTP(w http.ResponseWriter, req *http.Request) {
	rep := r.evaluate(req.Context())
	w.Header().Set("Content-Type", "application/json")
	if !rep.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(rep)
}

// startAdmin listens on addr and serves /healthz, /readyz and /metrics until
// shutdown. pending maps the checks that keep the process not ready until
// they are added (or cleared) to the reason /readyz shows for each. It also
// evaluates readiness once a second until the first success, so the start-up
// log says when the process became ready.
func startAdmin(addr string, log *slog.Logger, reg *prometheus.Registry, draining *atomic.Bool,
	timeout time.Duration, ready chan struct{}, checks []check, pending map[string]string,
) (*admin, error) {
	up := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dtx_dependency_up",
		Help: "1 when the last readiness check of the dependency succeeded, else 0.",
	}, []string{"dependency"})
	reg.MustRegister(up)
	rd := &readiness{checks: checks, timeout: timeout, draining: draining, ready: ready, up: up, log: log,
		pending: maps.Clone(pending)}
	if rd.pending == nil {
		rd.pending = map[string]string{}
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", rd.serveHTTP)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin-addr (DTX_ADMIN_ADDR) %s: %w", addr, err)
	}
	a := &admin{
		mux:       mux,
		rd:        rd,
		srv:       &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		stopWatch: make(chan struct{}),
	}
	log.Info("admin server listening", "addr", ln.Addr().String())
	a.wg.Go(func() {
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.serveErr = fmt.Errorf("admin server: %w", err)
		}
	})
	a.wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for attempt := 0; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			rep := rd.evaluate(ctx)
			cancel()
			if rep.Ready {
				return
			}
			if attempt%30 == 0 {
				log.Warn("waiting for dependencies", "checks", rep.Checks)
			}
			select {
			case <-a.stopWatch:
				return
			case <-t.C:
			}
		}
	})
	return a, nil
}

// AddReadyCheck adds a check behind /readyz: while fn returns an error, the
// process is not ready and /readyz shows the error under name. fn runs with
// the ready timeout (--ready-timeout) on each request to /readyz and once a
// second until the process is first ready. A check added under a name
// already in use replaces it. Name the checks a work loop adds in
// App.ReadyChecksFunc, so that the process does not report ready before the
// work loop has added them. Safe for concurrent use.
func (e *Env) AddReadyCheck(name string, fn func(ctx context.Context) error) {
	e.readiness.add(check{name: name, fn: fn})
}
