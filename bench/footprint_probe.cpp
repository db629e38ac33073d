// footprint_probe: the memory floors behind docs/adr/0008-agent-daemon-footprint.md. Built three
// times (plain; with OpenSSL; with libcurl), each run prints VmRSS, RssAnon and RssFile from
// /proc/self/status after each step of one mode: plain, openssl (one TLS client context), curl
// (one HTTPS transfer attempt to 127.0.0.1:1, which refuses), dlopen (libcurl loaded at run time,
// used, unloaded).
#include <dlfcn.h>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <openssl/ssl.h>
#include <curl/curl.h>

static void Mem(const char* what) {
  std::ifstream in("/proc/self/status");
  std::string line, rss, anon, file;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) rss = line.substr(6);
    if (line.rfind("RssAnon:", 0) == 0) anon = line.substr(8);
    if (line.rfind("RssFile:", 0) == 0) file = line.substr(8);
  }
  std::printf("%-28s RSS %s | anon %s | file %s\n", what, rss.c_str(), anon.c_str(), file.c_str());
}

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "plain";
  Mem("start");
#ifdef WITH_SSL
  if (mode == "openssl") {
    OPENSSL_init_ssl(0, nullptr);
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_default_verify_paths(ctx);
    Mem("openssl ctx");
    SSL_CTX_free(ctx);
    Mem("openssl ctx freed");
  }
#endif
#ifdef WITH_CURL
  if (mode == "curl") {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL* c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, "https://127.0.0.1:1/");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 200L);
    curl_easy_perform(c);
    Mem("curl after transfer attempt");
    curl_easy_cleanup(c);
    curl_global_cleanup();
    Mem("curl cleaned up");
  }
#endif
  if (mode == "dlopen") {
    void* h = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!h) { std::printf("dlopen: %s\n", dlerror()); return 1; }
    auto init = reinterpret_cast<CURLcode (*)(long)>(dlsym(h, "curl_global_init"));
    auto easy = reinterpret_cast<CURL* (*)()>(dlsym(h, "curl_easy_init"));
    auto setopt = reinterpret_cast<CURLcode (*)(CURL*, CURLoption, ...)>(dlsym(h, "curl_easy_setopt"));
    auto perform = reinterpret_cast<CURLcode (*)(CURL*)>(dlsym(h, "curl_easy_perform"));
    auto cleanup = reinterpret_cast<void (*)(CURL*)>(dlsym(h, "curl_easy_cleanup"));
    auto gcleanup = reinterpret_cast<void (*)()>(dlsym(h, "curl_global_cleanup"));
    init(CURL_GLOBAL_DEFAULT);
    CURL* c = easy();
    setopt(c, CURLOPT_URL, "https://127.0.0.1:1/");
    setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 200L);
    perform(c);
    Mem("dlopen curl after transfer");
    cleanup(c);
    gcleanup();
    dlclose(h);
    Mem("after dlclose");
  }
  return 0;
}
