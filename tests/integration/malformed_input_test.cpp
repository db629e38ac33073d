// Every upkeep program meets hostile input with a clean error and exit code, never an abort: the
// real binaries are run as separate processes on a corpus of malformed files (invalid UTF-8,
// truncation, wrong types, huge numbers, deep nesting, NUL and control bytes) placed wherever they
// read input: configuration, trusted root, journal, metadata served by a mirror, bundles, staged
// repository files, keys, update-module work directories. A run passes when the process exits
// (no signal) with the documented failure code, says what went wrong, and nothing escaped as an
// exception (no "internal error": the libraries must return the failure as a value).

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "http_test_server.hpp"
#include "temp_dir.hpp"

namespace upkeep {
namespace {

namespace fs = std::filesystem;

struct Corpus {
  std::string name;
  std::string bytes;
};

std::vector<Corpus> MalformedCorpus() {
  return {
      {"empty", ""},
      {"invalid-utf8", "\xff\xfe"},
      {"invalid-utf8-in-string", "{\"signed\": \"\xc3\x28\", \"signatures\": []}"},
      {"truncated", R"({"signed": {"_type": "targ)"},
      {"wrong-types", R"({"signed": [], "signatures": {}})"},
      {"huge-number",
       R"({"signed": {"_type": "timestamp", "version": 99999999999999999999999999999}, "signatures": []})"},
      {"negative-number", R"({"signed": {"version": -1, "expires": 5}, "signatures": [1]})"},
      {"deep-nesting", std::string(100000, '[')},
      {"nul-bytes", std::string("{\"a\0\": 1}", 9)},
      {"control-bytes", "\x1b[2J\x1b]0;owned\x07"},
      {"not-json", "version = 3\n[signed]\n"},
      {"large", std::string(3 << 20, 'x')},
  };
}

void Write(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string Read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct Outcome {
  bool signaled = false;
  int signal = 0;
  int code = -1;
  std::string out;
  std::string err;
};

// Runs `argv` with stdout and stderr captured in files under `scratch`, no stdin, a minimal
// environment and a deadline (the process is killed after 60 s and the test fails).
Outcome Spawn(const std::vector<std::string>& argv, const fs::path& scratch) {
  const fs::path out_file = scratch / "stdout";
  const fs::path err_file = scratch / "stderr";
  std::vector<char*> c_argv;
  std::vector<std::string> args = argv;
  for (auto& a : args) c_argv.push_back(a.data());
  c_argv.push_back(nullptr);
  std::string path_env = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
  char* c_env[] = {path_env.data(), nullptr};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  posix_spawn_file_actions_addopen(&actions, 2, err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, c_argv[0], &actions, nullptr, c_argv.data(), c_env);
  posix_spawn_file_actions_destroy(&actions);
  Outcome o;
  EXPECT_EQ(rc, 0) << argv[0];
  if (rc != 0) return o;
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      ADD_FAILURE() << argv[0] << " did not finish within 60 s";
      break;
    }
    ::usleep(2000);
  }
  o.signaled = WIFSIGNALED(status);
  o.signal = o.signaled ? WTERMSIG(status) : 0;
  o.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  o.out = Read(out_file);
  o.err = Read(err_file);
  return o;
}

std::string Describe(const std::vector<std::string>& argv, const Outcome& o) {
  std::ostringstream s;
  for (const auto& a : argv) s << a << " ";
  s << "\n  exit " << o.code << (o.signaled ? " signal " + std::to_string(o.signal) : "")
    << "\n  stdout: " << o.out.substr(0, 400) << "\n  stderr: " << o.err.substr(0, 400);
  return s.str();
}

// A clean failure: exited with one of `codes`, a message in `where` (stderr, or stdout for
// --json), and no exception reached the program's edge.
void ExpectCleanFailure(const std::vector<std::string>& argv, const Outcome& o,
                        const std::set<int>& codes, bool json = false) {
  SCOPED_TRACE(Describe(argv, o));
  EXPECT_FALSE(o.signaled);
  EXPECT_TRUE(codes.contains(o.code));
  EXPECT_EQ(o.err.find("internal error"), std::string::npos);
  if (!json) {
    EXPECT_FALSE(o.err.empty());
    return;
  }
  // --json: the last line of stdout is an error object.
  std::string last;
  std::istringstream lines(o.out);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty()) last = line;
  }
  const auto j = nlohmann::json::parse(last, nullptr, false);
  ASSERT_TRUE(j.is_object()) << last;
  EXPECT_EQ(j.value("type", ""), "error");
  EXPECT_FALSE(j.value("code", "").empty());
}

class MalformedInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    scratch_ = tmp_.path() / "scratch";
    fs::create_directories(scratch_);
    // A good published repository to break one file at a time.
    const auto init =
        Spawn({UPKEEP_TOOL, "repo", "init", (tmp_.path() / "repo").string()}, scratch_);
    ASSERT_EQ(init.code, 0) << Describe({"repo init"}, init);
    const auto published = Spawn({UPKEEP_TOOL, "repo", "publish", (tmp_.path() / "repo").string(),
                                  (tmp_.path() / "www").string()},
                                 scratch_);
    ASSERT_EQ(published.code, 0) << Describe({"repo publish"}, published);
  }

  fs::path Repo() const { return tmp_.path() / "repo"; }
  fs::path Www() const { return tmp_.path() / "www"; }
  fs::path Root() const { return Www() / "metadata" / "1.root.json"; }
  // A fresh copy of the published repository with `file` (relative to www) replaced.
  fs::path BrokenMirror(const std::string& tag, const std::string& file, const std::string& bytes) {
    const fs::path copy = tmp_.path() / ("mirror-" + tag);
    fs::remove_all(copy);
    fs::copy(Www(), copy, fs::copy_options::recursive);
    Write(copy / file, bytes);
    return copy;
  }
  // A fresh copy of the release engineer's repository with `file` (relative to it) replaced.
  fs::path BrokenRepo(const std::string& tag, const std::string& file, const std::string& bytes) {
    const fs::path copy = tmp_.path() / ("repo-" + tag);
    fs::remove_all(copy);
    fs::copy(Repo(), copy, fs::copy_options::recursive);
    Write(copy / file, bytes);
    return copy;
  }

  // A simulated device's configuration file, with `overrides` appended to its sections.
  fs::path DeviceConfig(const std::string& tag, const std::string& trusted_root) {
    const fs::path dir = tmp_.path() / ("device-" + tag);
    fs::remove_all(dir);
    fs::create_directories(dir / "data");
    Write(dir / "slot-a", std::string(4096, 'a'));
    Write(dir / "slot-b", "");
    Write(dir / "bootenv", "upkeep_slot=a\n");
    Write(dir / "cmdline", "root=/dev/x upkeep.slot=a\n");
    Write(dir / "boot_id", "boot-1\n");
    const std::string toml =
        "[device]\nhardware = \"sim\"\ndata_dir = \"" + (dir / "data").string() +
        "\"\n[trust]\nroot = \"" + trusted_root + "\"\n[slots]\na = \"" +
        (dir / "slot-a").string() + "\"\nb = \"" + (dir / "slot-b").string() +
        "\"\n[bootloader]\ntype = \"file\"\nenv = \"" + (dir / "bootenv").string() +
        "\"\ncmdline = \"" + (dir / "cmdline").string() + "\"\nboot_id = \"" +
        (dir / "boot_id").string() + "\"\n";
    Write(dir / "agent.toml", toml);
    return dir;
  }

  testing::TempDir tmp_;
  fs::path scratch_;
};

TEST_F(MalformedInputTest, TufClientFailsCleanlyOnMalformedRootAndMirrorFiles) {
  for (const auto& c : MalformedCorpus()) {
    SCOPED_TRACE(c.name);
    const fs::path meta = tmp_.path() / ("tuf-" + c.name);
    fs::create_directories(meta);
    Write(tmp_.path() / "bad-root.json", c.bytes);
    std::vector<std::string> argv = {UPKEEP_TUF_CLIENT, "--metadata-dir", meta.string(), "init",
                                     (tmp_.path() / "bad-root.json").string()};
    ExpectCleanFailure(argv, Spawn(argv, scratch_), {1});

    // A good trusted root, then a mirror serving the malformed bytes as the timestamp and as the
    // next root.
    argv = {UPKEEP_TUF_CLIENT, "--metadata-dir", meta.string(), "init", Root().string()};
    ASSERT_EQ(Spawn(argv, scratch_).code, 0);
    for (const std::string file : {"metadata/timestamp.json", "metadata/2.root.json"}) {
      testing::HttpTestServer server(BrokenMirror(c.name, file, c.bytes));
      argv = {UPKEEP_TUF_CLIENT,
              "--metadata-dir",
              meta.string(),
              "--metadata-url",
              server.base_url() + "/metadata",
              "refresh"};
      ExpectCleanFailure(argv, Spawn(argv, scratch_), {1});
    }
  }
}

TEST_F(MalformedInputTest, AgentFailsCleanlyOnMalformedConfigRootJournalBundleAndMirror) {
  for (const auto& c : MalformedCorpus()) {
    SCOPED_TRACE(c.name);
    const fs::path bad = tmp_.path() / ("bad-" + c.name);
    Write(bad, c.bytes);

    // Configuration file.
    std::vector<std::string> argv = {UPKEEP_AGENT, "-c", bad.string(), "status"};
    ExpectCleanFailure(argv, Spawn(argv, scratch_), {1});
    argv = {UPKEEP_AGENT, "--json", "-c", bad.string(), "status"};
    ExpectCleanFailure(argv, Spawn(argv, scratch_), {1}, true);

    // Trusted root provisioned at manufacture.
    fs::path device = DeviceConfig(c.name + "-root", bad.string());
    testing::HttpTestServer good(Www());
    argv = {UPKEEP_AGENT,    "--json",          "-c", (device / "agent.toml").string(), "install",
            good.base_url(), "rootfs/x.payload"};
    ExpectCleanFailure(argv, Spawn(argv, scratch_), {1, 2, 4, 7}, true);

    device = DeviceConfig(c.name, Root().string());
    const std::string config = (device / "agent.toml").string();
    // An offline bundle.
    argv = {UPKEEP_AGENT, "-c", config, "install", bad.string()};
    ExpectCleanFailure(argv, Spawn(argv, scratch_), {2, 4});
    argv = {UPKEEP_AGENT, "--json", "-c", config, "install", bad.string()};
    ExpectCleanFailure(argv, Spawn(argv, scratch_), {2, 4}, true);

    // A mirror serving the bytes as timestamp.json (the journal stays absent or intact).
    testing::HttpTestServer server(BrokenMirror(c.name, "metadata/timestamp.json", c.bytes));
    argv = {UPKEEP_AGENT, "--json", "-c", config, "install", server.base_url(), "rootfs/x.payload"};
    ExpectCleanFailure(argv, Spawn(argv, scratch_), {2, 4}, true);

    // The journal.
    Write(device / "data" / "state.json", c.bytes);
    argv = {UPKEEP_AGENT, "-c", config, "status"};
    ExpectCleanFailure(argv, Spawn(argv, scratch_), {7});
    argv = {UPKEEP_AGENT, "--json", "-c", config, "status"};
    ExpectCleanFailure(argv, Spawn(argv, scratch_), {7}, true);
    EXPECT_EQ(Read(device / "data" / "state.json"), c.bytes);  // reported, never replaced
  }
}

TEST_F(MalformedInputTest, ReleaseToolFailsCleanlyOnHandEditedRepositoryFiles) {
  // Hand edits of a valid staged targets file: a field deleted, a type changed.
  auto targets = nlohmann::json::parse(Read(Repo() / "staged" / "targets.json"));
  std::vector<Corpus> edits = MalformedCorpus();
  auto no_expires = targets;
  no_expires["signed"].erase("expires");
  edits.push_back({"no-expires", no_expires.dump()});
  auto string_version = targets;
  string_version["signed"]["version"] = "2";
  edits.push_back({"string-version", string_version.dump()});
  auto no_signed = targets;
  no_signed.erase("signed");
  edits.push_back({"no-signed", no_signed.dump()});

  for (const auto& c : edits) {
    SCOPED_TRACE(c.name);
    for (const std::string file : {"staged/targets.json", "staged/root.json", "repo.json"}) {
      SCOPED_TRACE(file);
      const fs::path repo = BrokenRepo(c.name, file, c.bytes);
      std::vector<std::string> argv = {UPKEEP_TOOL, "repo", "publish", repo.string(),
                                       (tmp_.path() / ("out-" + c.name)).string()};
      ExpectCleanFailure(argv, Spawn(argv, scratch_), {1});
      argv = {UPKEEP_TOOL, "repo", "status", repo.string()};
      ExpectCleanFailure(argv, Spawn(argv, scratch_), {1});
    }
    // Key files.
    for (const auto& key : fs::directory_iterator(Repo() / "keys")) {
      const fs::path repo =
          BrokenRepo(c.name + "-key", "keys/" + key.path().filename().string(), c.bytes);
      fs::permissions(repo / "keys" / key.path().filename(),
                      fs::perms::owner_read | fs::perms::owner_write);
      const std::vector<std::string> argv = {UPKEEP_TOOL, "repo", "publish", repo.string(),
                                             (tmp_.path() / ("out-key-" + c.name)).string()};
      const Outcome o = Spawn(argv, scratch_);
      SCOPED_TRACE(Describe(argv, o));
      EXPECT_FALSE(o.signaled);
      EXPECT_EQ(o.err.find("internal error"), std::string::npos);
    }
    const fs::path bad = tmp_.path() / ("bad-" + c.name);
    Write(bad, c.bytes);
    Write(tmp_.path() / "payload.bin", "payload");
    std::vector<std::string> argv = {UPKEEP_TOOL,
                                     "repo",
                                     "add-target",
                                     Repo().string(),
                                     (tmp_.path() / "payload.bin").string(),
                                     "--name",
                                     "rootfs/x.bin",
                                     "--meta",
                                     bad.string()};
    ExpectCleanFailure(argv, Spawn(argv, scratch_), {1});
    argv = {UPKEEP_TOOL, "image", "verify", bad.string(), bad.string()};
    ExpectCleanFailure(argv, Spawn(argv, scratch_), {1});
    argv = {UPKEEP_TOOL, "bundle",
            "verify",    bad.string(),
            "--root",    Root().string(),
            "--target",  "rootfs/x.bin",
            "-o",        (tmp_.path() / ("bundle-out-" + c.name)).string()};
    ExpectCleanFailure(argv, Spawn(argv, scratch_), {1});
  }
}

TEST_F(MalformedInputTest, UpdateModulesFailCleanlyOnMalformedWorkDirectories) {
  for (const auto& c : MalformedCorpus()) {
    SCOPED_TRACE(c.name);
    for (const std::string type : {"file", "dir", "deb"}) {
      SCOPED_TRACE(type);
      // A malformed header.
      fs::path work = tmp_.path() / ("work-" + type + "-" + c.name);
      fs::remove_all(work);
      Write(work / "header.json", c.bytes);
      Write(work / "files" / "artifact.bin", "content");
      std::vector<std::string> argv = {UPKEEP_MODULE, type, "Install", work.string()};
      ExpectCleanFailure(argv, Spawn(argv, scratch_), {1});
      // A good header and a malformed artifact.
      fs::remove_all(work);
      const nlohmann::json header = {
          {"component", "app"},
          {"version", "1"},
          {"target", "app/artifact.bin"},
          {"module_args", {{"dest", (tmp_.path() / ("dest-" + type + "-" + c.name)).string()}}}};
      if (type == "deb") continue;  // a malformed package would reach the system's dpkg
      Write(work / "header.json", header.dump());
      Write(work / "files" / "artifact.bin", c.bytes);
      argv = {UPKEEP_MODULE, type, "Install", work.string()};
      const Outcome o = Spawn(argv, scratch_);
      SCOPED_TRACE(Describe(argv, o));
      EXPECT_FALSE(o.signaled);
      EXPECT_EQ(o.err.find("internal error"), std::string::npos);
      if (type != "file") {
        EXPECT_EQ(o.code, 1);  // file installs any bytes as they are
      }
    }
  }
}

}  // namespace
}  // namespace upkeep
