//go:build !purego

package dlp

import "golang.org/x/sys/cpu"

// haveVecKernel: the AVX2 kernel can run (the CPU has AVX2, BMI1 and
// BMI2, and the OS saves the YMM registers).
var haveVecKernel = cpu.X86.HasAVX2 && cpu.X86.HasBMI1 && cpu.X86.HasBMI2

// vecScanAVX2 is vecPlan.kernel in AVX2 (vecscan_amd64.s).
//
//go:noescape
func vecScanAVX2(t *vecTables, b []byte, from, to int) (off int, kw, dig uint32)

var vecKernel = vecScanAVX2
