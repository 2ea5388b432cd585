package jujusim

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"syscall"
)

// subnetLease reserves a 127.0.X.0/24 block for one model across processes, with a lock file,
// so concurrent models (tests in parallel packages, a running jujusim daemon) never share
// addresses.
type subnetLease struct {
	third int
	f     *os.File
}

func leaseSubnet() (*subnetLease, error) {
	dir := filepath.Join(os.TempDir(), "jujusim-subnets")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return nil, fmt.Errorf("cannot lease a subnet: %w", err)
	}
	n, _ := rand.Int(rand.Reader, big.NewInt(252))
	start := int(n.Int64())
	for i := range 252 {
		third := 2 + (start+i)%252
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("127.0.%d.lock", third)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return nil, fmt.Errorf("cannot lease a subnet: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		return &subnetLease{third: third, f: f}, nil
	}
	return nil, errors.New("cannot lease a subnet: all 127.0.X.0/24 blocks in use")
}

// addr returns the address of machine n.
func (l *subnetLease) addr(n int) (string, error) {
	if n > 250 {
		return "", errors.New("cannot add machine: no addresses left in the model's subnet")
	}
	return fmt.Sprintf("127.0.%d.%d", l.third, n+1), nil
}

func (l *subnetLease) release() {
	l.f.Close()
}
