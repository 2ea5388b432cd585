package postgres

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestBatchContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type key struct{}
		first, cancelFirst := context.WithCancel(context.WithValue(t.Context(), key{}, "leader"))
		second, cancelSecond := context.WithCancel(t.Context())
		ctx, stop := batchContext([]*checkInCall{{ctx: first}, {ctx: second}})
		defer stop()
		if ctx.Value(key{}) != "leader" {
			t.Errorf("the batch context lacks the first call's values")
		}
		cancelFirst()
		synctest.Wait()
		if ctx.Err() != nil {
			t.Fatalf("the batch context ended with one of its two calls: %v", ctx.Err())
		}
		cancelSecond()
		synctest.Wait()
		if ctx.Err() == nil {
			t.Fatalf("the batch context lives on after all its calls ended")
		}
	})
}

func TestTimestampArray(t *testing.T) {
	at := time.Date(2024, 5, 1, 8, 0, 0, 123456000, time.UTC)
	if got, want := timestampArray([]time.Time{at, {}}, true), `{"2024-05-01 08:00:00.123456Z",NULL}`; got != want {
		t.Errorf("timestampArray(nullZero) = %s, want %s", got, want)
	}
	if got, want := timestampArray(nil, false), `{}`; got != want {
		t.Errorf("timestampArray(nil) = %s, want %s", got, want)
	}
}
