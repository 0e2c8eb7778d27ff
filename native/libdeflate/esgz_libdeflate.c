/*
 * Minimal N-API binding over the system libdeflate (Debian libdeflate-dev, MIT):
 * gzip-compress one whole buffer at a level. eStargz members are whole buffers of at most one
 * chunk, which is exactly what libdeflate's one-shot API wants.
 *
 * Compressors are expensive to allocate (hundreds of KB of tables), so each thread keeps one per
 * level in thread-local storage: every worker_thread gets its own, none is shared across threads.
 */
#include <libdeflate.h>
#include <node_api.h>
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

/* gzipCompress(input: Buffer|Uint8Array, level: number): Buffer */
static napi_value gzip_compress(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2)
    return throw_error(env, "gzipCompress(input, level) needs two arguments");

  void *input = NULL;
  size_t input_len = 0;
  bool is_buffer = false;
  napi_is_buffer(env, argv[0], &is_buffer);
  if (is_buffer) {
    if (napi_get_buffer_info(env, argv[0], &input, &input_len) != napi_ok)
      return throw_error(env, "gzipCompress: cannot read input buffer");
  } else {
    napi_typedarray_type type;
    napi_value ab;
    size_t offset;
    if (napi_get_typedarray_info(env, argv[0], &type, &input_len, &input, &ab, &offset) != napi_ok ||
        type != napi_uint8_array)
      return throw_error(env, "gzipCompress: input must be a Buffer or Uint8Array");
  }

  int32_t level = 0;
  if (napi_get_value_int32(env, argv[1], &level) != napi_ok || level < 0 || level > MAX_LEVEL)
    return throw_error(env, "gzipCompress: level must be an integer from 0 to 12");

  struct libdeflate_compressor *c = compressors[level];
  if (c == NULL) {
    c = libdeflate_alloc_compressor(level);
    if (c == NULL) return throw_error(env, "gzipCompress: libdeflate_alloc_compressor failed");
    compressors[level] = c;
  }

  size_t bound = libdeflate_gzip_compress_bound(c, input_len);
  void *out = malloc(bound > 0 ? bound : 1);
  if (out == NULL) return throw_error(env, "gzipCompress: out of memory");
  size_t written = libdeflate_gzip_compress(c, input, input_len, out, bound);
  if (written == 0) {
    free(out);
    return throw_error(env, "gzipCompress: libdeflate_gzip_compress failed");
  }
  /* Shrink so the external buffer reports its true size (and can be transferred cheaply). */
  void *shrunk = realloc(out, written);
  if (shrunk != NULL) out = shrunk;

  napi_value result;
  if (napi_create_external_buffer(env, written, out, free_output, NULL, &result) != napi_ok) {
    free(out);
    return throw_error(env, "gzipCompress: cannot create result buffer");
  }
  return result;
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
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
