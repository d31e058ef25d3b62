/*
 * C ABI of the CPU reference (libffexport_reference.so), for ctypes and for C/C++ test programs.
 *
 * Every function returns 0 on success or an FFE_ERROR_* code, and then writes one line into
 * `message` (at most message_size bytes, NUL-terminated; may be NULL). Nothing throws or aborts.
 * Arrays are C-contiguous; `dtype` is 0 float32, 1 float16, 2 bfloat16 (raw 16-bit patterns).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FFE_OK 0
#define FFE_ERROR_INVALID_ARGUMENT 1 /* attributes, shapes or dtype */
#define FFE_ERROR_INVALID_DATA 2     /* values: patch id out of range, a chain longer than max_run, NaN */
#define FFE_ERROR_INTERNAL 3         /* out of memory or a bug */

/* Version of this ABI (bumped when a signature changes). */
int ffe_reference_abi_version(void);

/* Validation only (the plugins' rules): n may be -1 (unknown). */
int ffe_validate_merge(int64_t n, int64_t d, int32_t dtype, int64_t remove, int64_t patches_per_frame,
    int64_t max_run, char* message, size_t message_size);
int ffe_validate_prune(int64_t n, int32_t dtype, int64_t keep, char* message, size_t message_size);

/* FrameFusionMerge: visual [n, d] (dtype), patch_ids [n] -> kept [n - remove], values [n - remove, d] (dtype). */
int ffe_merge(void const* visual, int32_t dtype, int64_t n, int64_t d, int64_t const* patch_ids, int64_t remove,
    int64_t patches_per_frame, int64_t max_run, int64_t* kept, void* values, char* message, size_t message_size);

/* FrameFusionPrune: importance [n] float32 -> kept [keep]. */
int ffe_prune(float const* importance, int64_t n, int64_t keep, int64_t* kept, char* message, size_t message_size);

/* The merge's intermediate steps, for tests: patch order [n] (int64), merge keys [n] (float32, patch
   order) and selection flags [n] (uint8) of top_flags(scores, count, relative). */
int ffe_patch_order(int64_t const* patch_ids, int64_t n, int64_t patches_per_frame, int64_t* order, char* message,
    size_t message_size);
int ffe_chain_closeness(void const* visual, int32_t dtype, int64_t n, int64_t d, int64_t const* patch_ids,
    int64_t patches_per_frame, float* key, char* message, size_t message_size);
int ffe_top_flags(float const* scores, int64_t n, int64_t count, int32_t relative, uint8_t* flags, char* message,
    size_t message_size);

#ifdef __cplusplus
}
#endif
