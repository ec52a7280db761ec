// conv2d_implicit_gemm_tf32.cu -- conv2d_implicit_gemm.cu for T = float on tensor cores:
// PREC 1 = TF32 (precision "medium": operands rounded to 10-bit mantissas by cvt.rna, products
// exact, FP32 accumulation), PREC 2 = 3xTF32 (precision "high": each operand split into a TF32
// big part and a TF32 residual, three MMAs, FP32 accumulation).  A module of its own so the
// float16 module's compile and simulator build stay small.  Same tiles, same 64-byte rows
// (16 floats: BK = 16, two m16n8k8 k-steps per row), channels padded per group to 4.
#include "conv2d_implicit_gemm.cu"
