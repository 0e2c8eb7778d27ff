/*
 * Minimal N-API binding over Debian's ISA-L (libisal-dev, BSD-3-Clause): streaming gzip
 * decompression on libuv's thread pool, like Node's own zlib streams but about 3.5x faster
 * (measured here on a 49 MB rootfs layer: 0.17 s vs 0.62 s of CPU). Converting a layer
 * decompresses its whole gzip source, so this is CPU that every convert and optimize saves.
 *
 *   createInflater(): handle (one gzip member at a time; `reset` starts the next)
 *   inflate(handle, input, output, callback(err, consumed, produced, finished))
 *   reset(handle)
 *
 * `inflate` runs isal_inflate over `input` into `output` on the thread pool until the input is
 * used up, the output is full, or the member ends (its CRC32 and size checked). The caller keeps
 * both buffers untouched until the callback, and runs one call per handle at a time.
 */
#include <isa-l/igzip_lib.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  struct inflate_state state;
  napi_async_work work;
  napi_ref input_ref, output_ref, callback_ref;
  int status;
  size_t consumed, produced;
  bool busy;
} inflater_t;

static napi_value throw_error(napi_env env, const char *message) {
  napi_throw_error(env, NULL, message);
  return NULL;
}

static void start_member(inflater_t *inf) {
  isal_inflate_reset(&inf->state);
  inf->state.crc_flag = ISAL_GZIP;
}

static void free_inflater(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static inflater_t *unwrap(napi_env env, napi_value value) {
  void *data = NULL;
  if (napi_get_value_external(env, value, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, NULL, "not an inflater handle");
    return NULL;
  }
  return data;
}

static bool bytes_of(napi_env env, napi_value value, uint8_t **data, size_t *length) {
  bool is_buffer = false;
  napi_is_buffer(env, value, &is_buffer);
  if (is_buffer) return napi_get_buffer_info(env, value, (void **)data, length) == napi_ok;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  return napi_get_typedarray_info(env, value, &type, length, (void **)data, &ab, &offset) == napi_ok && type == napi_uint8_array;
}

static const char *describe(int status) {
  switch (status) {
    case ISAL_INVALID_BLOCK: return "invalid deflate block";
    case ISAL_INVALID_SYMBOL: return "invalid deflate symbol";
    case ISAL_INVALID_LOOKBACK: return "invalid back-reference distance";
    case ISAL_INVALID_WRAPPER: return "incorrect gzip header";
    case ISAL_UNSUPPORTED_METHOD: return "unsupported compression method";
    case ISAL_INCORRECT_CHECKSUM: return "incorrect gzip checksum";
    case ISAL_NEED_DICT: return "needs a preset dictionary";
    default: return "decompression failed";
  }
}

static napi_value create_inflater(napi_env env, napi_callback_info info) {
  (void)info;
  inflater_t *inf = calloc(1, sizeof(*inf));
  if (inf == NULL) return throw_error(env, "createInflater: out of memory");
  isal_inflate_init(&inf->state);
  inf->state.crc_flag = ISAL_GZIP;
  napi_value handle;
  if (napi_create_external(env, inf, free_inflater, NULL, &handle) != napi_ok) {
    free(inf);
    return throw_error(env, "createInflater: cannot create handle");
  }
  return handle;
}

static void execute(napi_env env, void *data) {
  (void)env;
  inflater_t *inf = data;
  uint32_t in_before = inf->state.avail_in, out_before = inf->state.avail_out;
  inf->status = isal_inflate(&inf->state);
  inf->consumed = in_before - inf->state.avail_in;
  inf->produced = out_before - inf->state.avail_out;
}

static void complete(napi_env env, napi_status status, void *data) {
  inflater_t *inf = data;
  napi_value callback, global, argv[4];
  napi_get_reference_value(env, inf->callback_ref, &callback);
  napi_delete_reference(env, inf->callback_ref);
  napi_delete_reference(env, inf->input_ref);
  napi_delete_reference(env, inf->output_ref);
  napi_delete_async_work(env, inf->work);
  inf->busy = false;
  napi_get_global(env, &global);
  if (status != napi_ok || inf->status < 0) {
    napi_value message;
    const char *text = status != napi_ok ? "decompression was cancelled" : describe(inf->status);
    napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &argv[0]);
    napi_call_function(env, global, callback, 1, argv, NULL);
    return;
  }
  napi_get_null(env, &argv[0]);
  napi_create_double(env, (double)inf->consumed, &argv[1]);
  napi_create_double(env, (double)inf->produced, &argv[2]);
  napi_get_boolean(env, inf->state.block_state == ISAL_BLOCK_FINISH, &argv[3]);
  napi_call_function(env, global, callback, 4, argv, NULL);
}

static napi_value inflate(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4)
    return throw_error(env, "inflate(handle, input, output, callback) needs four arguments");
  inflater_t *inf = unwrap(env, argv[0]);
  if (inf == NULL) return NULL;
  if (inf->busy) return throw_error(env, "inflate: a call on this handle is still running");
  uint8_t *input, *output;
  size_t input_len, output_len;
  if (!bytes_of(env, argv[1], &input, &input_len) || !bytes_of(env, argv[2], &output, &output_len))
    return throw_error(env, "inflate: input and output must be Buffers or Uint8Arrays");
  if (input_len > UINT32_MAX || output_len > UINT32_MAX) return throw_error(env, "inflate: buffers must be under 4 GiB");
  napi_valuetype type;
  napi_typeof(env, argv[3], &type);
  if (type != napi_function) return throw_error(env, "inflate: callback must be a function");

  inf->state.next_in = input;
  inf->state.avail_in = (uint32_t)input_len;
  inf->state.next_out = output;
  inf->state.avail_out = (uint32_t)output_len;
  napi_create_reference(env, argv[1], 1, &inf->input_ref);
  napi_create_reference(env, argv[2], 1, &inf->output_ref);
  napi_create_reference(env, argv[3], 1, &inf->callback_ref);
  napi_value name;
  napi_create_string_utf8(env, "esgz:isal-inflate", NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, execute, complete, inf, &inf->work) != napi_ok ||
      napi_queue_async_work(env, inf->work) != napi_ok) {
    napi_delete_reference(env, inf->input_ref);
    napi_delete_reference(env, inf->output_ref);
    napi_delete_reference(env, inf->callback_ref);
    return throw_error(env, "inflate: cannot queue work");
  }
  inf->busy = true;
  return NULL;
}

static napi_value reset(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1)
    return throw_error(env, "reset(handle) needs a handle");
  inflater_t *inf = unwrap(env, argv[0]);
  if (inf == NULL) return NULL;
  if (inf->busy) return throw_error(env, "reset: a call on this handle is still running");
  start_member(inf);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "createInflater", NAPI_AUTO_LENGTH, create_inflater, NULL, &fn);
  napi_set_named_property(env, exports, "createInflater", fn);
  napi_create_function(env, "inflate", NAPI_AUTO_LENGTH, inflate, NULL, &fn);
  napi_set_named_property(env, exports, "inflate", fn);
  napi_create_function(env, "reset", NAPI_AUTO_LENGTH, reset, NULL, &fn);
  napi_set_named_property(env, exports, "reset", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
