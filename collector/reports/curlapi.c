#include "reports/curlapi.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define CURL_SONAME "libcurl.so.4"

static curl_api api;
static bool loaded;

/* Look NAME up in LIB into *SLOT (a function pointer of the right type). */
static bool sym(void *lib, const char *name, void *slot, char *err,
                size_t errlen) {
  void *f = dlsym(lib, name);
  if (!f) {
    snprintf(err, errlen, "%s lacks %s", CURL_SONAME, name);
    return false;
  }
  memcpy(slot, &f, sizeof f); /* object to function pointer, as POSIX allows */
  return true;
}

const curl_api *curl_api_load(char *err, size_t errlen) {
  if (loaded) return &api;
  /* Kept open for the life of the process: libcurl is not meant to be
   * unloaded (its global state, OpenSSL's). */
  void *lib = dlopen(CURL_SONAME, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *why = dlerror();
    snprintf(err, errlen, "cannot load %s (HTTP for the report push): %s",
             CURL_SONAME, why ? why : "unknown error");
    return NULL;
  }
  curl_api a;
  if (!sym(lib, "curl_global_init", &a.global_init, err, errlen) ||
      !sym(lib, "curl_easy_init", &a.easy_init, err, errlen) ||
      !sym(lib, "curl_easy_setopt", &a.easy_setopt, err, errlen) ||
      !sym(lib, "curl_easy_getinfo", &a.easy_getinfo, err, errlen) ||
      !sym(lib, "curl_easy_strerror", &a.easy_strerror, err, errlen) ||
      !sym(lib, "curl_easy_cleanup", &a.easy_cleanup, err, errlen) ||
      !sym(lib, "curl_multi_init", &a.multi_init, err, errlen) ||
      !sym(lib, "curl_multi_setopt", &a.multi_setopt, err, errlen) ||
      !sym(lib, "curl_multi_add_handle", &a.multi_add_handle, err, errlen) ||
      !sym(lib, "curl_multi_remove_handle", &a.multi_remove_handle, err, errlen) ||
      !sym(lib, "curl_multi_assign", &a.multi_assign, err, errlen) ||
      !sym(lib, "curl_multi_socket_action", &a.multi_socket_action, err, errlen) ||
      !sym(lib, "curl_multi_info_read", &a.multi_info_read, err, errlen) ||
      !sym(lib, "curl_multi_cleanup", &a.multi_cleanup, err, errlen) ||
      !sym(lib, "curl_slist_append", &a.slist_append, err, errlen) ||
      !sym(lib, "curl_slist_free_all", &a.slist_free_all, err, errlen)) {
    dlclose(lib);
    return NULL;
  }
  if (a.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    snprintf(err, errlen, "cannot initialise libcurl");
    dlclose(lib);
    return NULL;
  }
  api = a;
  loaded = true;
  return &api;
}
