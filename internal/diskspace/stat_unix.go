//go:build unix

package diskspace

import "syscall"

func stat(dir string) (free, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	// Bavail, not Bfree: the blocks an unprivileged process may use (ext4 keeps some for root).
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

// Allocated is the space a file takes on disk (less than its size when it has holes).
func Allocated(path string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0
	}
	return int64(st.Blocks) * 512
}
