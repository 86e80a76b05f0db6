/* Minimal declarations of the two LZ4 functions Verilator's FST writer calls, for machines
 * that have the LZ4 runtime library (liblz4.so.1) but not its development headers. Used by
 * sim/rtl/runner.py only when <lz4.h> is not installed; the signatures are LZ4's stable API.
 */
#ifndef SHIFTBOOK_LZ4_SHIM_H
#define SHIFTBOOK_LZ4_SHIM_H
#ifdef __cplusplus
extern "C" {
#endif
int LZ4_compressBound(int inputSize);
int LZ4_compress_default(const char* src, char* dst, int srcSize, int dstCapacity);
#ifdef __cplusplus
}
#endif
#endif
