/*
 * Minimal N-API binding over Debian's libdeflate (libdeflate-dev, MIT; linked statically when
 * the archive is there, see libdeflate-link.sh). eStargz members are whole buffers of at most
 * one chunk, which is exactly what libdeflate's one-shot API wants. Members travel in batches,
 * laid end to end in one buffer (member i ends at ends[i]):
 *  - gzipBatchBound(ends, level): the most bytes gzipCompressBatch can write for such a batch.
 *  - gzipCompressBatch(input, ends, level, sizes, output): compresses each member into its own
 *    gzip member, one after another in `output`; writes each compressed size into sizes[i] and
 *    returns the total. One call (and one worker message) per batch instead of per member:
 *    most members of a rootfs are small files.
 * The output is a buffer the caller owns (JavaScript memory the garbage collector accounts for),
 * never malloc'ed here.
 *  - setMmapThreshold(bytes): fixes glibc's mmap threshold (see below); false where it cannot.
 *
 * Compressors are expensive to allocate (hundreds of KB of tables), so each thread keeps one per
 * level in thread-local storage: every worker_thread gets its own, none is shared across threads.
 */
#include <libdeflate.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#define MAX_LEVEL 12

static _Thread_local struct libdeflate_compressor *compressors[MAX_LEVEL + 1];

static napi_value throw_error(napi_env env, const char *message) {
  napi_throw_error(env, NULL, message);
  return NULL;
}

/* A Buffer or a typed array of `want` type: its data and element count. */
static bool typed_data(napi_env env, napi_value value, napi_typedarray_type want, void **data, size_t *length) {
  bool is_buffer = false;
  if (want == napi_uint8_array) napi_is_buffer(env, value, &is_buffer);
  if (is_buffer) return napi_get_buffer_info(env, value, data, length) == napi_ok;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  return napi_get_typedarray_info(env, value, &type, length, data, &ab, &offset) == napi_ok && type == want;
}

/* This thread's compressor for the level in `value`, or NULL with a JS error thrown. */
static struct libdeflate_compressor *compressor_for(napi_env env, napi_value value) {
  int32_t level = 0;
  if (napi_get_value_int32(env, value, &level) != napi_ok || level < 0 || level > MAX_LEVEL) {
    napi_throw_range_error(env, NULL, "level must be an integer from 0 to 12");
    return NULL;
  }
  if (compressors[level] == NULL) compressors[level] = libdeflate_alloc_compressor(level);
  if (compressors[level] == NULL) napi_throw_error(env, NULL, "libdeflate_alloc_compressor failed");
  return compressors[level];
}

/* Sum of the members' bounds, or SIZE_MAX when `ends` do not rise within `input_len`. */
static size_t batch_bound(struct libdeflate_compressor *c, const uint32_t *ends, size_t count, size_t input_len) {
  size_t bound = 0, start = 0;
  for (size_t i = 0; i < count; i++) {
    if (ends[i] < start || ends[i] > input_len) return SIZE_MAX;
    bound += libdeflate_gzip_compress_bound(c, ends[i] - start);
    start = ends[i];
  }
  return bound;
}

/* gzipBatchBound(ends: Uint32Array, level: number): number */
static napi_value gzip_batch_bound(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2)
    return throw_error(env, "gzipBatchBound(ends, level) needs two arguments");
  uint32_t *ends = NULL;
  size_t count = 0;
  if (!typed_data(env, argv[0], napi_uint32_array, (void **)&ends, &count))
    return throw_error(env, "gzipBatchBound: ends must be a Uint32Array");
  struct libdeflate_compressor *c = compressor_for(env, argv[1]);
  if (c == NULL) return NULL;
  size_t bound = batch_bound(c, ends, count, SIZE_MAX);
  if (bound == SIZE_MAX) return throw_error(env, "gzipBatchBound: ends must rise");
  napi_value result;
  napi_create_double(env, (double)bound, &result);
  return result;
}

/* gzipCompressBatch(input: Uint8Array, ends: Uint32Array, level: number, sizes: Uint32Array, output: Uint8Array): number */
static napi_value gzip_compress_batch(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5)
    return throw_error(env, "gzipCompressBatch(input, ends, level, sizes, output) needs five arguments");
  uint8_t *input = NULL, *output = NULL;
  size_t input_len = 0, output_len = 0, count = 0, sizes_len = 0;
  uint32_t *ends = NULL, *sizes = NULL;
  if (!typed_data(env, argv[0], napi_uint8_array, (void **)&input, &input_len) ||
      !typed_data(env, argv[4], napi_uint8_array, (void **)&output, &output_len))
    return throw_error(env, "gzipCompressBatch: input and output must be Buffers or Uint8Arrays");
  if (!typed_data(env, argv[1], napi_uint32_array, (void **)&ends, &count) ||
      !typed_data(env, argv[3], napi_uint32_array, (void **)&sizes, &sizes_len) || sizes_len != count)
    return throw_error(env, "gzipCompressBatch: ends and sizes must be Uint32Arrays of the same length");
  struct libdeflate_compressor *c = compressor_for(env, argv[2]);
  if (c == NULL) return NULL;
  size_t bound = batch_bound(c, ends, count, input_len);
  if (bound == SIZE_MAX) return throw_error(env, "gzipCompressBatch: ends must rise within the input");
  if (bound > output_len) return throw_error(env, "gzipCompressBatch: output is smaller than gzipBatchBound");

  size_t written = 0, start = 0;
  for (size_t i = 0; i < count; i++) {
    size_t n = libdeflate_gzip_compress(c, input + start, ends[i] - start, output + written, output_len - written);
    if (n == 0) return throw_error(env, "gzipCompressBatch: libdeflate_gzip_compress failed");
    sizes[i] = (uint32_t)n;
    written += n;
    start = ends[i];
  }
  napi_value result;
  napi_create_double(env, (double)written, &result);
  return result;
}

/*
 * setMmapThreshold(bytes: number): boolean
 * A conversion allocates and frees layer-sized streams of 256 KiB-4 MiB buffers on several
 * threads. glibc raises its mmap threshold to the size of each large block freed, so even the
 * biggest buffers soon come from per-thread arenas that fragment and never shrink: RSS then
 * grows with the layer (1 GiB layer: ~285 MB peak). esgz fixes it at 2 MiB: the 1 MiB stream
 * chunks are reused from the heap (mmap'ed, each costs 256 freshly zeroed pages: about 40% of a
 * conversion's system time), bigger buffers are mmap'ed and returned on free. RSS stays flat
 * (1 GiB layer: ~225 MB). An explicit MALLOC_MMAP_THRESHOLD_ from the user wins.
 */
static napi_value set_mmap_threshold(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  int32_t bytes = 0;
  bool done = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &bytes) != napi_ok || bytes <= 0)
    return throw_error(env, "setMmapThreshold(bytes) needs a positive byte count");
#ifdef __GLIBC__
  if (getenv("MALLOC_MMAP_THRESHOLD_") == NULL) done = mallopt(M_MMAP_THRESHOLD, bytes) == 1;
#endif
  napi_get_boolean(env, done, &result);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "gzipBatchBound", NAPI_AUTO_LENGTH, gzip_batch_bound, NULL, &fn);
  napi_set_named_property(env, exports, "gzipBatchBound", fn);
  napi_create_function(env, "gzipCompressBatch", NAPI_AUTO_LENGTH, gzip_compress_batch, NULL, &fn);
  napi_set_named_property(env, exports, "gzipCompressBatch", fn);
  napi_create_function(env, "setMmapThreshold", NAPI_AUTO_LENGTH, set_mmap_threshold, NULL, &fn);
  napi_set_named_property(env, exports, "setMmapThreshold", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
