package config_test

import (
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/server/config"
)

const s3Storage = minimal + `
patch-storage:
  type: s3
  s3-endpoint: https://s3.example.com:8333
  s3-region: eu-west-1
  s3-bucket: livepatch-patches
  s3-path-prefix: site-a/patches
  s3-access-key: AKIAEXAMPLE
  s3-secret-key: s3-secret-value
  s3-ca-file: /etc/livepatch/s3-ca.pem
  s3-path-style: true
  redirect-downloads: true
`

func TestParseS3(t *testing.T) {
	c, err := config.Parse([]byte(s3Storage))
	if err != nil {
		t.Fatal(err)
	}
	s := c.PatchStorage
	if s.Type != config.StorageS3 || s.S3Endpoint != "https://s3.example.com:8333" || s.S3Bucket != "livepatch-patches" ||
		s.S3PathPrefix != "site-a/patches" || s.S3SecretKey != "s3-secret-value" || !s.S3PathStyle || !s.RedirectDownloads {
		t.Errorf("PatchStorage = %+v", s)
	}
}

func TestParseS3Problems(t *testing.T) {
	for _, test := range []struct {
		from, to string
		want     string
	}{
		{"  s3-endpoint: https://s3.example.com:8333\n", "", "patch-storage.s3-endpoint is required"},
		{"https://s3.example.com:8333", "s3.example.com", "is not an http(s) URL"},
		{"https://s3.example.com:8333", "https://AKIA:s3-secret-value@s3.example.com", "must not carry credentials"},
		{"https://s3.example.com:8333", "https://s3.example.com/livepatch-patches", "must have no path"},
		{"  s3-bucket: livepatch-patches\n", "", "patch-storage.s3-bucket is required"},
		{"livepatch-patches", "Livepatch_Patches", `patch-storage.s3-bucket "Livepatch_Patches" is not a valid bucket name`},
		{"eu-west-1", "Europe West", "is not a region name"},
		{"site-a/patches", "site-a/../b", "has an empty, . or .. segment"},
		{"  s3-secret-key: s3-secret-value\n", "", "s3-secret-key are required"},
		{"  s3-access-key: AKIAEXAMPLE\n", "", "s3-secret-key are required"},
		{"/etc/livepatch/s3-ca.pem", "s3-ca.pem", "is not an absolute path"},
		{"type: s3", "type: filesystem\n  filesystem-path: /srv/patches", "redirect-downloads needs patch-storage.type s3"},
		{"type: s3", "type: swift", `patch-storage.type "swift" is not one of postgres, filesystem, s3`},
	} {
		in := strings.Replace(s3Storage, test.from, test.to, 1)
		_, err := config.Parse([]byte(in))
		if err == nil || !strings.Contains(err.Error(), test.want) {
			t.Errorf("with %q for %q: %v, want %q", test.to, test.from, err, test.want)
			continue
		}
		if strings.Contains(err.Error(), "s3-secret-value") {
			t.Errorf("with %q for %q: the error shows the secret key:\n%v", test.to, test.from, err)
		}
	}
}
