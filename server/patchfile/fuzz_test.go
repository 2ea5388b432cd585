package patchfile_test

import (
	"bytes"
	"testing"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
)

// FuzzRead feeds arbitrary bytes to the archive reader: it must never panic, and any
// error must be an invalid-input error (a 400, never a 500).
func FuzzRead(f *testing.F) {
	var buf bytes.Buffer
	patchfile.Generate(&buf, patchfile.Metadata("5.15.0-107.117", "generic", "107.1", "amd64"), 256)
	f.Add(buf.Bytes())
	f.Add([]byte("BZh91AY&SY"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := patchfile.Read(bytes.NewReader(data))
		if err != nil {
			if server.ErrorCode(err) != server.CodeInvalid {
				t.Fatalf("error %v has code %v", err, server.ErrorCode(err))
			}
			return
		}
		if info.Metadata.Module == "" || info.ModuleSize <= 0 {
			t.Fatalf("accepted archive with %+v", info)
		}
	})
}
