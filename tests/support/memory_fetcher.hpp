#pragma once

// A Fetcher over an in-memory map of URL -> bytes that records every request, for tests that
// check which files the client asks for and in what order.

#include <map>
#include <string>
#include <vector>

#include "upkeep/common/errc.hpp"
#include "upkeep/common/fetcher.hpp"

namespace upkeep::testing {

class MemoryFetcher final : public Fetcher {
 public:
  void Set(const std::string& url, std::string body) { files_[url] = std::move(body); }
  void Erase(const std::string& url) { files_.erase(url); }
  void Clear() { files_.clear(); }
  [[nodiscard]] const std::vector<std::string>& requests() const { return requests_; }
  void ClearRequests() { requests_.clear(); }

  Result<void> Fetch(const std::string& url, std::uint64_t max_bytes, const Sink& sink) override {
    requests_.push_back(url);
    auto it = files_.find(url);
    if (it == files_.end()) return Error(common::Errc::RemoteNotFound, url);
    const std::string& body = it->second;
    if (body.size() > max_bytes) {
      // Deliver exactly the allowed bytes first, as a real transfer would before aborting.
      UPKEEP_TRY(sink(std::span<const char>(body.data(), static_cast<std::size_t>(max_bytes))));
      return Error(common::Errc::LengthExceeded, url);
    }
    return sink(std::span<const char>(body.data(), body.size()));
  }

 private:
  std::map<std::string, std::string> files_;
  std::vector<std::string> requests_;
};

}  // namespace upkeep::testing
