/* curlapi: libcurl, loaded when a report push is configured.
 *
 * Only the report pusher needs HTTP, and only on gateways that push to the
 * bureau. Linked in, libcurl brings some twenty libraries (GnuTLS, Kerberos,
 * LDAP, SSH, RTMP...) into every gateway's memory, about 4 MB of resident
 * pages, whether a report is ever pushed or not. So it is opened with
 * dlopen(3) the first time a pusher is made, and called through this table
 * of the functions the pusher uses. The headers and the ABI are libcurl's
 * own (soname libcurl.so.4, the version it was built against).
 */
#ifndef IC_CURLAPI_H
#define IC_CURLAPI_H

#include <curl/curl.h>
#include <stddef.h>

typedef struct curl_api {
  CURLcode (*global_init)(long flags);
  CURL *(*easy_init)(void);
  CURLcode (*easy_setopt)(CURL *h, CURLoption opt, ...);
  CURLcode (*easy_getinfo)(CURL *h, CURLINFO info, ...);
  const char *(*easy_strerror)(CURLcode code);
  void (*easy_cleanup)(CURL *h);
  CURLM *(*multi_init)(void);
  CURLMcode (*multi_setopt)(CURLM *m, CURLMoption opt, ...);
  CURLMcode (*multi_add_handle)(CURLM *m, CURL *h);
  CURLMcode (*multi_remove_handle)(CURLM *m, CURL *h);
  CURLMcode (*multi_assign)(CURLM *m, curl_socket_t s, void *p);
  CURLMcode (*multi_socket_action)(CURLM *m, curl_socket_t s, int ev,
                                   int *running);
  CURLMsg *(*multi_info_read)(CURLM *m, int *left);
  CURLMcode (*multi_cleanup)(CURLM *m);
  struct curl_slist *(*slist_append)(struct curl_slist *l, const char *s);
  void (*slist_free_all)(struct curl_slist *l);
} curl_api;

/* Load libcurl (once; later calls return the same table) and initialise it.
 * NULL with ERR saying why (the library is not installed, or lacks a
 * function). Call from the loop thread. */
const curl_api *curl_api_load(char *err, size_t errlen);

#endif
