package httpapi_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/httpapi"
)

// BenchmarkCheckIn measures the machine check-in path end to end over HTTP on loopback:
// JSON decode, one database round trip (record the report, read the tier), patch selection
// from the in-memory catalog, JSON encode. Run with:
//
//	go test -run '^$' -bench CheckIn -benchtime 20000x ./server/httpapi
//
// "signed": the server has a signing key, so offers carry its patch signature.
func BenchmarkCheckIn(b *testing.B) {
	b.Run("unsigned", func(b *testing.B) { benchmarkCheckIn(b, newEnv(b, withWallClock), nil) })
	b.Run("signed", func(b *testing.B) {
		var pub ed25519.PublicKey
		benchmarkCheckIn(b, newEnv(b, withWallClock, withSigningKey(&pub)), pub)
	})
}

// withWallClock gives the server the wall clock instead of the env's fixed time, as a
// benchmark needs: under a clock that stands still, every check-in of a machine comes at
// the time its state last changed, which is how the store tells a change of state, so
// each one would add a row to the compact history (machine_changes) that no real
// check-in adds.
func withWallClock(o *httpapi.Options) { o.Now = func() time.Time { return time.Now().UTC() } }

// benchmarkCheckIn runs the check-ins; with pub, every offer must carry a signature (the
// benchmark client does not verify it: that is the machines' work, not the server's).
func benchmarkCheckIn(b *testing.B, e *env, pub ed25519.PublicKey) {
	e.upload("5.15.0-107.117", "generic", "107.1", "amd64")
	tok := e.authToken("bench", "edge", 0)
	const machines = 500
	tokens := make([]string, machines)
	for i := range machines {
		tokens[i] = e.enable(fmt.Sprintf("bench-%04d", i), tok)
	}
	body, _ := json.Marshal(status("5.15.0-107-generic"))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1)) % machines
			req, _ := http.NewRequest("POST", fmt.Sprintf("%s/v1/client/bench-%04d/updates", e.srv.URL, i), bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tokens[i])
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			var up server.Update
			json.NewDecoder(resp.Body).Decode(&up)
			resp.Body.Close()
			if resp.StatusCode != 200 || up.Patch == nil || (pub != nil && up.Patch.Signature == nil) {
				b.Fatalf("check-in: %d %+v", resp.StatusCode, up)
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checkins/s")
}

// BenchmarkDownload measures streaming a realistic 2 MB patch from the postgres patch store.
//
//	go test -run '^$' -bench Download -benchtime 200x ./server/httpapi
func BenchmarkDownload(b *testing.B) {
	e := newEnv(b)
	name, data := patchArchive(b, "5.15.0-107.117", "generic", "107.1", "amd64", 2<<20)
	e.must(201, "PUT", "/v1/admin/patches/files/"+name, "session", data, nil)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(2)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(e.srv.URL + "/patches/" + name)
			if err != nil {
				b.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || n != int64(len(data)) {
				b.Fatalf("download: %d, %d bytes", resp.StatusCode, n)
			}
		}
	})
}
