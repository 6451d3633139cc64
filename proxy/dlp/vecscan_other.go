//go:build !amd64 || purego

package dlp

// No vector kernel here: the samplers scan.
const haveVecKernel = false

var vecKernel = vecScanRef
