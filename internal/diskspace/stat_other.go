//go:build !unix

package diskspace

import "os"

func stat(string) (free, total int64, err error) { return 0, 0, ErrUnsupported }

// Allocated is the space a file takes on disk (its size, where holes cannot be seen).
func Allocated(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
