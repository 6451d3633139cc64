//go:build !amd64 || purego

package dlp

// No vector kernel here: the samplers scan. (A variable, as on amd64,
// so that tests can force the fallback anywhere.)
var haveVecKernel = false

var vecKernel = vecScanRef
