#ifndef FERRY_CCURL_SHIM_H
#define FERRY_CCURL_SHIM_H

#include <curl/curl.h>

/* curl_easy_setopt and curl_easy_getinfo are variadic, which Swift cannot call. One typed
 * wrapper per argument kind, as swift-corelibs-foundation's CFURLSessionInterface does. */
static inline CURLcode ferry_curl_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode ferry_curl_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode ferry_curl_setopt_pointer(CURL *handle, CURLoption option, void *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode ferry_curl_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value) {
    return curl_easy_setopt(handle, option, value);
}

typedef size_t (*ferry_curl_data_callback)(char *data, size_t size, size_t count, void *context);

static inline CURLcode ferry_curl_setopt_data_callback(CURL *handle, CURLoption option, ferry_curl_data_callback callback) {
    return curl_easy_setopt(handle, option, callback);
}

static inline CURLcode ferry_curl_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLcode ferry_curl_getinfo_double(CURL *handle, CURLINFO info, double *value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLMcode ferry_curl_multi_setopt_long(CURLM *multi, CURLMoption option, long value) {
    return curl_multi_setopt(multi, option, value);
}

/* CURLVERSION_NOW is a macro aliasing an enum case, which Swift does not import. */
static inline curl_version_info_data *ferry_curl_version_info(void) {
    return curl_version_info(CURLVERSION_NOW);
}

#endif
