package ntp

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// offHeapMin is the size from which makeOffHeap maps memory instead of
// allocating it on the Go heap.
const offHeapMin = 1 << 20

// makeOffHeap returns n zeroed elements of T, which must contain no Go
// pointers. Large slices come from an anonymous private mapping, outside
// the Go heap: the client table is allocated once and lives as long as the
// process, and on the heap it would raise the garbage collector's heap goal
// by its own size (a 1,000,000-client table would let about 90 MB more
// garbage accumulate before each collection). Pages are backed by memory
// only once touched. Small slices, and any mapping failure, use make.
func makeOffHeap[T any](n int) []T {
	var zero T
	size := n * int(unsafe.Sizeof(zero))
	if n == 0 || size < offHeapMin {
		return make([]T, n)
	}
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]T, n)
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), n)
}
