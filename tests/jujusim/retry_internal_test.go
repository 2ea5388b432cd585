package jujusim

import (
	"testing"
	"time"
)

func TestNextRetryDelay(t *testing.T) {
	tests := []struct {
		d    time.Duration
		r    float64
		want time.Duration
	}{
		{5 * time.Second, 0.5, 10 * time.Second},
		{5 * time.Second, 0, 9700 * time.Millisecond},
		{5 * time.Second, 1, 10300 * time.Millisecond},
		{160 * time.Second, 0.5, 5 * time.Minute},
		{5 * time.Minute, 0, 5 * time.Minute},
	}
	for _, tt := range tests {
		if got := nextRetryDelay(tt.d, tt.r); got != tt.want {
			t.Errorf("nextRetryDelay(%s, %v) = %s, want %s", tt.d, tt.r, got, tt.want)
		}
	}
}
