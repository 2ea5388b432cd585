package httpapi

import (
	"context"
	"sync"

	"github.com/livepatch-onprem/livepatch/server"
)

// limiter bounds concurrent requests: up to n run, up to burst more wait, the rest get 429.
type limiter struct {
	slots   chan struct{}
	mu      sync.Mutex
	waiting int
	burst   int
}

func newLimiter(n, burst int) *limiter {
	return &limiter{slots: make(chan struct{}, n), burst: burst}
}

func (l *limiter) acquire(ctx context.Context) (release func(), err error) {
	select {
	case l.slots <- struct{}{}:
		return func() { <-l.slots }, nil
	default:
	}
	l.mu.Lock()
	if l.waiting >= l.burst {
		l.mu.Unlock()
		return nil, server.Errorf(server.CodeTooManyRequests, "server is busy: too many concurrent requests, retry later")
	}
	l.waiting++
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.waiting--
		l.mu.Unlock()
	}()
	select {
	case l.slots <- struct{}{}:
		return func() { <-l.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
