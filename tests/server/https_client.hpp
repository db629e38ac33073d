#pragma once

// A libcurl client for the fleet server's tests: one request to 127.0.0.1 over HTTPS with the
// method, headers and client certificate given; the path is sent as is (no "../" folding), and
// the answer's status, body and headers (names lower-case) come back.

#include <curl/curl.h>

#include <cctype>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace upkeep::testing {

struct HttpsCall {
  std::string method = "GET";
  std::string path = "/";
  std::vector<std::string> headers;  // "Name: value"
  std::string body;
  std::string cert_file;  // client certificate and key (PEM files); empty: none
  std::string key_file;
};

struct HttpsReply {
  CURLcode code = CURLE_OK;
  long status = 0;  // NOLINT(google-runtime-int): libcurl's type
  std::string body;
  std::map<std::string, std::string> headers;
  [[nodiscard]] std::string Header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

namespace https_client_detail {
inline std::size_t Body(char* data, std::size_t size, std::size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}
inline std::size_t Header(char* data, std::size_t size, std::size_t n, void* user) {
  std::string line(data, size * n);
  auto* headers = static_cast<std::map<std::string, std::string>*>(user);
  if (line.starts_with("HTTP/")) headers->clear();  // a new answer (after 100 Continue)
  const auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
    (*headers)[name] = value;
  }
  return size * n;
}
}  // namespace https_client_detail

// `curl` may be reused between calls (keep-alive); pass nullptr for a fresh connection.
inline HttpsReply CallHttps(std::uint16_t port, const std::string& ca_file, const HttpsCall& call,
                            CURL* curl = nullptr) {
  HttpsReply r;
  CURL* own = curl == nullptr ? curl_easy_init() : nullptr;
  CURL* c = curl != nullptr ? curl : own;
  if (c == nullptr) {
    r.code = CURLE_FAILED_INIT;
    return r;
  }
  curl_easy_reset(c);
  const std::string url = "https://127.0.0.1:" + std::to_string(port) + call.path;
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt(c, CURLOPT_CAINFO, ca_file.c_str());
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &https_client_detail::Body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &https_client_detail::Header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r.headers);
  if (!call.cert_file.empty()) {
    curl_easy_setopt(c, CURLOPT_SSLCERT, call.cert_file.c_str());
    curl_easy_setopt(c, CURLOPT_SSLKEY, call.key_file.c_str());
  }
  curl_slist* headers = nullptr;
  for (const auto& h : call.headers) headers = curl_slist_append(headers, h.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  if (call.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (call.method == "POST") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, call.body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(call.body.size()));
  } else if (call.method != "GET") {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, call.method.c_str());
  }
  r.code = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
  curl_slist_free_all(headers);
  if (own != nullptr) curl_easy_cleanup(own);
  return r;
}

}  // namespace upkeep::testing
