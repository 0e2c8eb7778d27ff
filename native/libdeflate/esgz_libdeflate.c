/*
 * Minimal N-API binding over Debian's libdeflate (libdeflate-dev, MIT; linked statically when
 * the archive is there, see libdeflate-link.sh): gzip-compress whole buffers at a level. eStargz
 * members are whole buffers of at most one chunk, which is exactly what libdeflate's one-shot
 * API wants.
 *  - gzipCompress(input, level): one member.
 *  - gzipCompressBatch(input, ends, level, sizes): several members laid end to end in `input`
 *    (member i ends at ends[i]), each compressed into its own gzip member; returns them
 *    concatenated and writes each member's compressed size into sizes[i]. One call (and one
 *    worker message) per batch instead of per member: most members of a rootfs are small files.
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

static void free_output(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

/* A Buffer or a typed array of `want` type: its bytes and element count; false (with a JS error) otherwise. */
static bool typed_bytes(napi_env env, napi_value value, napi_typedarray_type want, void **data, size_t *length) {
  bool is_buffer = false;
  if (want == napi_uint8_array) napi_is_buffer(env, value, &is_buffer);
  if (is_buffer) return napi_get_buffer_info(env, value, data, length) == napi_ok;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  return napi_get_typedarray_info(env, value, &type, length, data, &ab, &offset) == napi_ok && type == want;
}

/* This thread's compressor for `level` (argument checked), or NULL with a JS error thrown. */
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

/* Hands `written` bytes of malloc'ed `out` to JS as a Buffer (shrunk first so it reports its true size). */
static napi_value external_result(napi_env env, void *out, size_t written) {
  void *shrunk = realloc(out, written > 0 ? written : 1);
  if (shrunk != NULL) out = shrunk;
  napi_value result;
  if (napi_create_external_buffer(env, written, out, free_output, NULL, &result) != napi_ok) {
    free(out);
    return throw_error(env, "cannot create result buffer");
  }
  return result;
}

/* gzipCompress(input: Buffer|Uint8Array, level: number): Buffer */
static napi_value gzip_compress(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2)
    return throw_error(env, "gzipCompress(input, level) needs two arguments");
  void *input = NULL;
  size_t input_len = 0;
  if (!typed_bytes(env, argv[0], napi_uint8_array, &input, &input_len))
    return throw_error(env, "gzipCompress: input must be a Buffer or Uint8Array");
  struct libdeflate_compressor *c = compressor_for(env, argv[1]);
  if (c == NULL) return NULL;

  size_t bound = libdeflate_gzip_compress_bound(c, input_len);
  void *out = malloc(bound > 0 ? bound : 1);
  if (out == NULL) return throw_error(env, "gzipCompress: out of memory");
  size_t written = libdeflate_gzip_compress(c, input, input_len, out, bound);
  if (written == 0) {
    free(out);
    return throw_error(env, "gzipCompress: libdeflate_gzip_compress failed");
  }
  return external_result(env, out, written);
}

/* gzipCompressBatch(input: Uint8Array, ends: Uint32Array, level: number, sizes: Uint32Array): Buffer */
static napi_value gzip_compress_batch(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4)
    return throw_error(env, "gzipCompressBatch(input, ends, level, sizes) needs four arguments");
  uint8_t *input = NULL;
  size_t input_len = 0, count = 0, sizes_len = 0;
  uint32_t *ends = NULL, *sizes = NULL;
  if (!typed_bytes(env, argv[0], napi_uint8_array, (void **)&input, &input_len))
    return throw_error(env, "gzipCompressBatch: input must be a Buffer or Uint8Array");
  if (!typed_bytes(env, argv[1], napi_uint32_array, (void **)&ends, &count) ||
      !typed_bytes(env, argv[3], napi_uint32_array, (void **)&sizes, &sizes_len) || sizes_len < count)
    return throw_error(env, "gzipCompressBatch: ends and sizes must be Uint32Arrays of the same length");
  struct libdeflate_compressor *c = compressor_for(env, argv[2]);
  if (c == NULL) return NULL;

  size_t bound = 0, start = 0;
  for (size_t i = 0; i < count; i++) {
    if (ends[i] < start || ends[i] > input_len) return throw_error(env, "gzipCompressBatch: ends must rise within the input");
    bound += libdeflate_gzip_compress_bound(c, ends[i] - start);
    start = ends[i];
  }
  uint8_t *out = malloc(bound > 0 ? bound : 1);
  if (out == NULL) return throw_error(env, "gzipCompressBatch: out of memory");
  size_t written = 0;
  start = 0;
  for (size_t i = 0; i < count; i++) {
    size_t n = libdeflate_gzip_compress(c, input + start, ends[i] - start, out + written, bound - written);
    if (n == 0) {
      free(out);
      return throw_error(env, "gzipCompressBatch: libdeflate_gzip_compress failed");
    }
    sizes[i] = (uint32_t)n;
    written += n;
    start = ends[i];
  }
  return external_result(env, out, written);
}

static napi_value init(napi_env env, napi_value exports) {
#ifdef __GLIBC__
  /*
   * Members are malloc'ed buffers of up to a few MiB, freed on other threads. glibc's dynamic
   * mmap threshold then moves them into arena heaps that fragment and never shrink (RSS grows
   * with layer size). A fixed 128 KiB threshold keeps large buffers in mmap, returned on free.
   * Respect an explicit MALLOC_MMAP_THRESHOLD_ from the user.
   */
  static int malloc_tuned = 0;
  if (!malloc_tuned && getenv("MALLOC_MMAP_THRESHOLD_") == NULL) {
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    malloc_tuned = 1;
  }
#endif
  napi_value fn;
  napi_create_function(env, "gzipCompress", NAPI_AUTO_LENGTH, gzip_compress, NULL, &fn);
  napi_set_named_property(env, exports, "gzipCompress", fn);
  napi_create_function(env, "gzipCompressBatch", NAPI_AUTO_LENGTH, gzip_compress_batch, NULL, &fn);
  napi_set_named_property(env, exports, "gzipCompressBatch", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
