// upkeep-server with [metrics] and [repository]: the configuration sections (unknown keys
// rejected, --dump-config), and `serve` as its own process answering /metrics (bearer token,
// fleet numbers from the database) and /repository/ next to the device API.

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "cli.hpp"
#include "config.hpp"
#include "https_client.hpp"
#include "server_process.hpp"
#include "temp_dir.hpp"

namespace upkeep::server {
namespace {

namespace fs = std::filesystem;

int Cli(std::vector<std::string> args, std::string* err_text = nullptr) {
  args.insert(args.begin(), "upkeep-server");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  const int code = Main(static_cast<int>(argv.size()), argv.data(), out, err);
  if (err_text != nullptr) *err_text = out.str() + err.str();
  return code;
}

TEST(ServerConfigSectionsTest, ParsesMetricsAndRepositorySections) {
  auto c = ParseServerConfig(
      "[metrics]\ntoken_file = \"/etc/upkeep-server/metrics.token\"\n"
      "[repository]\ndirectory = \"/srv/upkeep/repository\"\n");
  ASSERT_TRUE(c) << c.error().ToString();
  EXPECT_TRUE(c->metrics.configured);
  EXPECT_EQ(c->metrics.token_file, "/etc/upkeep-server/metrics.token");
  EXPECT_TRUE(c->repository.configured);
  EXPECT_EQ(c->repository.directory, "/srv/upkeep/repository");
  const std::string dump = DumpServerConfig(*c);
  EXPECT_NE(dump.find("[metrics]"), std::string::npos) << dump;
  EXPECT_NE(dump.find("/etc/upkeep-server/metrics.token"), std::string::npos);
  EXPECT_NE(dump.find("[repository]"), std::string::npos);
  auto again = ParseServerConfig(dump);
  ASSERT_TRUE(again) << again.error().ToString();
  EXPECT_EQ(again->repository.directory, "/srv/upkeep/repository");
  // Absent sections: nothing served, nothing dumped.
  auto none = ParseServerConfig("");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->metrics.configured);
  EXPECT_FALSE(none->repository.configured);
  EXPECT_EQ(DumpServerConfig(*none).find("[metrics]"), std::string::npos);
}

TEST(ServerConfigSectionsTest, RejectsUnknownOrMissingKeys) {
  auto r = ParseServerConfig("[metrics]\ntoken_file = \"/t\"\ntoken = \"x\"\n");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::InvalidConfig);
  EXPECT_NE(r.error().message().find("metrics.token"), std::string::npos);
  EXPECT_EQ(ParseServerConfig("[metrics]\n").error().code(), Errc::InvalidConfig);
  EXPECT_EQ(ParseServerConfig("[repository]\n").error().code(), Errc::InvalidConfig);
  EXPECT_EQ(ParseServerConfig("[repository]\ndirectory = \"\"\n").error().code(),
            Errc::InvalidConfig);
  r = ParseServerConfig("[repository]\ndirectory = \"/r\"\nprefix = \"/x/\"\n");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("repository.prefix"), std::string::npos);
}

class ServeRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    d_ = (dir_.path() / "srv").string();
    ASSERT_EQ(Cli({"init", d_, "--ip", "127.0.0.1"}), kExitOk);
    config_ = d_ + "/server.toml";
    std::ifstream in(config_);
    text_.assign(std::istreambuf_iterator<char>(in), {});
    text_.replace(text_.find("0.0.0.0"), 7, "127.0.0.1");
    text_.replace(text_.find("port = 8443"), 11, "port = 0");
    fs::create_directories(dir_.path() / "repo" / "metadata");
    std::ofstream(dir_.path() / "repo" / "metadata" / "timestamp.json") << "{\"v\":1}";
    std::ofstream(d_ + "/metrics.token") << "serve-routes-token-0123456789\n";
  }
  void WriteConfig(const std::string& extra) { std::ofstream(config_) << text_ << extra; }

  // Starts `upkeep-server serve` and returns the port it logs (0 when it did not start).
  std::uint16_t Serve() {
    server_ = std::make_unique<upkeep::testing::ServerProcess>(UPKEEP_SERVER_BINARY, config_);
    log_ = server_->log();
    return server_->ok() ? server_->port() : 0;
  }

  upkeep::testing::HttpsReply Get(std::uint16_t port, const std::string& path,
                                  std::vector<std::string> headers = {}) {
    upkeep::testing::HttpsCall call;
    call.path = path;
    call.headers = std::move(headers);
    return upkeep::testing::CallHttps(port, d_ + "/device-ca.pem", call);
  }

  testing::TempDir dir_;
  std::string d_, config_, text_, log_;
  std::unique_ptr<upkeep::testing::ServerProcess> server_;
};

TEST_F(ServeRoutesTest, ServesMetricsAndTheRepositoryNextToTheDeviceApi) {
  WriteConfig("\n[metrics]\ntoken_file = \"" + d_ +
              "/metrics.token\"\n[repository]\ndirectory = \"" + (dir_.path() / "repo").string() +
              "\"\n");
  const std::uint16_t port = Serve();
  ASSERT_NE(port, 0) << log_;
  auto r = Get(port, "/repository/metadata/timestamp.json");
  ASSERT_EQ(r.code, CURLE_OK) << curl_easy_strerror(r.code);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "{\"v\":1}");
  EXPECT_EQ(Get(port, "/api/v1/support").status, 401);  // the device API, unchanged
  EXPECT_EQ(Get(port, "/metrics").status, 401);
  r = Get(port, "/metrics", {"Authorization: Bearer serve-routes-token-0123456789"});
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("\nupkeep_devices 0\n"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("upkeep_http_requests_total{route=\"repository\",code=\"200\"} 1\n"),
            std::string::npos);
  EXPECT_NE(r.body.find("upkeep_metrics_collector_up{collector=\"fleet\"} 1\n"), std::string::npos);
  EXPECT_NE(r.body.find("upkeep_metrics_collector_up{collector=\"https\"} 1\n"), std::string::npos);
}

TEST_F(ServeRoutesTest, WithoutTheSectionsMetricsAndRepositoryAre404) {
  WriteConfig("");
  const std::uint16_t port = Serve();
  ASSERT_NE(port, 0) << log_;
  EXPECT_EQ(Get(port, "/metrics", {"Authorization: Bearer serve-routes-token-0123456789"}).status,
            404);
  EXPECT_EQ(Get(port, "/repository/metadata/timestamp.json").status, 404);
}

TEST_F(ServeRoutesTest, RefusesAShortTokenOrAMissingDirectory) {
  std::ofstream(d_ + "/short.token") << "short\n";
  WriteConfig("\n[metrics]\ntoken_file = \"" + d_ + "/short.token\"\n");
  std::string err;
  EXPECT_EQ(Cli({"-c", config_, "serve"}, &err), kExitUsage);
  EXPECT_NE(err.find("metrics token"), std::string::npos) << err;
  WriteConfig("\n[repository]\ndirectory = \"" + d_ + "/none\"\n");
  EXPECT_EQ(Cli({"-c", config_, "serve"}, &err), kExitUsage);
  EXPECT_NE(err.find("repository directory"), std::string::npos) << err;
}

}  // namespace
}  // namespace upkeep::server
