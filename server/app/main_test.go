package app

import (
	"testing"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
