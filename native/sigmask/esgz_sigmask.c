/*
 * callWithSignalsBlocked(fn): calls fn with every signal blocked on the calling thread, then
 * restores the mask. Threads inherit their creator's signal mask, so a native library that
 * starts threads inside fn (libfuse, via fuse-native's mount) gets threads that never run a
 * signal handler.
 *
 * Why esgz needs it: libuv's signal handlers take a process-wide lock (a one-byte token in a
 * pipe). libfuse2's multi-threaded loop blocks only SIGTERM/INT/HUP/QUIT in its workers and
 * pthread_cancel()s them at unmount; a SIGCHLD (runc exiting as the layers unmount) handled on a
 * worker that is then cancelled loses the token, and the next signal registration in the
 * process (execa, Ctrl-C handlers) blocks forever.
 */
#include <node_api.h>
#include <signal.h>
#include <pthread.h>

static napi_value call_with_signals_blocked(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_value self;
  if (napi_get_cb_info(env, info, &argc, argv, &self, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, NULL, "callWithSignalsBlocked(fn): fn is required");
    return NULL;
  }
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &saved);
  napi_value global, result = NULL;
  napi_get_global(env, &global);
  napi_status status = napi_call_function(env, global, argv[0], 0, NULL, &result);
  pthread_sigmask(SIG_SETMASK, &saved, NULL);
  /* A JS exception thrown by fn stays pending and propagates to the caller. */
  return status == napi_ok ? result : NULL;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "callWithSignalsBlocked", NAPI_AUTO_LENGTH, call_with_signals_blocked, NULL, &fn);
  napi_set_named_property(env, exports, "callWithSignalsBlocked", fn);
  return exports;
}
