//go:build !purego

#include "textflag.h"

DATA nib<>+0(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA nib<>+8(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA nib<>+16(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA nib<>+24(SB)/8, $0x0f0f0f0f0f0f0f0f
GLOBL nib<>(SB), RODATA|NOPTR, $32

DATA zero<>+0(SB)/8, $0x3030303030303030
DATA zero<>+8(SB)/8, $0x3030303030303030
DATA zero<>+16(SB)/8, $0x3030303030303030
DATA zero<>+24(SB)/8, $0x3030303030303030
GLOBL zero<>(SB), RODATA|NOPTR, $32

DATA nine<>+0(SB)/8, $0x0909090909090909
DATA nine<>+8(SB)/8, $0x0909090909090909
DATA nine<>+16(SB)/8, $0x0909090909090909
DATA nine<>+24(SB)/8, $0x0909090909090909
GLOBL nine<>(SB), RODATA|NOPTR, $32

DATA space<>+0(SB)/8, $0x2020202020202020
DATA space<>+8(SB)/8, $0x2020202020202020
DATA space<>+16(SB)/8, $0x2020202020202020
DATA space<>+24(SB)/8, $0x2020202020202020
GLOBL space<>(SB), RODATA|NOPTR, $32

DATA dash<>+0(SB)/8, $0x2d2d2d2d2d2d2d2d
DATA dash<>+8(SB)/8, $0x2d2d2d2d2d2d2d2d
DATA dash<>+16(SB)/8, $0x2d2d2d2d2d2d2d2d
DATA dash<>+24(SB)/8, $0x2d2d2d2d2d2d2d2d
GLOBL dash<>(SB), RODATA|NOPTR, $32

// Digit and separator masks of the 32 bytes at addr: bit k of dst is
// byte k. Clobbers Y0-Y2.
#define CLASSIFY(addr, dmask, smask) \
	VMOVDQU addr, Y0 \
	VPSUBB  Y14, Y0, Y1 \
	VPMINUB Y13, Y1, Y2 \
	VPCMPEQB Y2, Y1, Y1 \
	VPMOVMSKB Y1, dmask \
	VPCMPEQB Y12, Y0, Y1 \
	VPCMPEQB Y11, Y0, Y2 \
	VPOR Y1, Y2, Y1 \
	VPMOVMSKB Y1, smask

// The buckets allowed by the bytes at addr as the window's first byte (lo
// table lt, hi table ht), into Y4. Clobbers Y0-Y2.
#define TEDDY0(addr, lt, ht) \
	VMOVDQU addr, Y0 \
	VPAND   Y15, Y0, Y1 \
	VPSRLW  $4, Y0, Y2 \
	VPAND   Y15, Y2, Y2 \
	VPSHUFB Y1, lt, Y1 \
	VPSHUFB Y2, ht, Y2 \
	VPAND   Y1, Y2, Y4

// The same for a later window byte, ANDed into Y4.
#define TEDDY(addr, lt, ht) \
	VMOVDQU addr, Y0 \
	VPAND   Y15, Y0, Y1 \
	VPSRLW  $4, Y0, Y2 \
	VPAND   Y15, Y2, Y2 \
	VPSHUFB Y1, lt, Y1 \
	VPSHUFB Y2, ht, Y2 \
	VPAND   Y1, Y4, Y4 \
	VPAND   Y2, Y4, Y4

// func vecScanAVX2(t *vecTables, b []byte, from, to int) (off int, kw, dig uint32)
//
// R10 and R11 hold the digit and separator masks of the 64 bytes from
// off-2: bit k is byte off-2+k. Each block classifies the 32 bytes from
// off+30 and shifts them in.
TEXT ·vecScanAVX2(SB), NOSPLIT, $0-64
	MOVQ t+0(FP), DI
	MOVQ b_base+8(FP), SI
	MOVQ from+32(FP), AX
	MOVQ to+40(FP), BX
	MOVQ 192(DI), DX       // digs
	VMOVDQU nib<>(SB), Y15
	VMOVDQU zero<>(SB), Y14
	VMOVDQU nine<>(SB), Y13
	VMOVDQU space<>(SB), Y12
	VMOVDQU dash<>(SB), Y11
	VMOVDQU 0(DI), Y10     // lo tables
	VMOVDQU 32(DI), Y9
	VMOVDQU 64(DI), Y8
	VMOVDQU 96(DI), Y7     // hi tables
	VMOVDQU 128(DI), Y6
	VMOVDQU 160(DI), Y5
	VPXOR   Y3, Y3, Y3
	CMPQ AX, BX
	JGE  none
	CLASSIFY(-2(SI)(AX*1), R10, R11)
	SHLQ $32, R10
	SHLQ $32, R11

loop:
	LEAQ (SI)(AX*1), R8

	// Keywords: the buckets surviving all three window bytes.
	TEDDY0((R8), Y10, Y7)
	TEDDY(1(R8), Y9, Y6)
	TEDDY(2(R8), Y8, Y5)

	// Digits.
	CLASSIFY(30(R8), R12, R13)
	SHRQ $32, R10
	SHLQ $32, R12
	ORQ  R12, R10          // D
	SHRQ $32, R11
	SHLQ $32, R13
	ORQ  R13, R11          // S
	// A separator with a digit on each side (tok), or two (strict).
	// RORX shifts right without a copy; the bits it rotates in from the
	// bottom reach no bit read below 52.
	LEAQ  (R10)(R10*1), R14
	ANDQ  R11, R14
	RORXQ $1, R10, R12
	ANDQ  R12, R14         // S & D<<1 & D>>1
	LEAQ  (R14)(R10*1), CX // tok (disjoint bits: OR is ADD)
	LEAQ  0(R10*4), R12
	ANDQ  R12, R14
	RORXQ $2, R10, R12
	ANDQ  R12, R14
	ORQ   R10, R14         // strict
	// Stretch starts: tok here, not before.
	LEAQ  (CX)(CX*1), R12
	ANDNQ CX, R12, CX
	// strict for 11 bytes from here.
	RORXQ $1, R14, R12
	ANDQ  R12, R14
	RORXQ $2, R14, R12
	ANDQ  R12, R14
	RORXQ $4, R14, R12
	ANDQ  R12, R14
	RORXQ $3, R14, R12
	ANDQ  R12, R14
	ANDQ  R14, CX
	ANDQ  DX, CX
	SHRQ  $2, CX           // bit k = position off+k
	MOVL  CX, CX

	VPTEST Y4, Y4
	JNZ    hit
	TESTQ  CX, CX
	JNZ    hit
	ADDQ   $32, AX
	CMPQ   AX, BX
	JLT    loop

none:
	MOVQ BX, off+48(FP)
	MOVL $0, kw+56(FP)
	MOVL $0, dig+60(FP)
	VZEROUPPER
	RET

hit:
	VPCMPEQB Y3, Y4, Y4
	VPMOVMSKB Y4, R9
	NOTL R9
	MOVQ AX, off+48(FP)
	MOVL R9, kw+56(FP)
	MOVL CX, dig+60(FP)
	VZEROUPPER
	RET
