#pragma once

// A director as `upkeep-server init` makes one, for tests: one offline root key (not kept) and one
// online key per role, root 1 valid for a year from `now`.

#include <chrono>

#include "upkeep/crypto/crypto.hpp"
#include "upkeep/metadata/director.hpp"
#include "upkeep/server/fleet.hpp"

namespace upkeep::testing {

inline server::DirectorOptions TestDirector(Clock::TimePoint now) {
  auto generate = [] { return crypto::PrivateKey::Generate(crypto::KeyAlgorithm::Ed25519).value(); };
  const crypto::PrivateKey root_key = generate();
  server::DirectorOptions director;
  director.keys = {{generate()}, {generate()}, {generate()}};
  const metadata::DirectorRootKeys keys{{{root_key.public_key()}, 1},
                                        {{director.keys.targets[0].public_key()}, 1},
                                        {{director.keys.snapshot[0].public_key()}, 1},
                                        {{director.keys.timestamp[0].public_key()}, 1}};
  director.roots.push_back(
      metadata::CreateDirectorRoot(keys, {root_key}, 1, now + std::chrono::days(365)).value());
  return director;
}

}  // namespace upkeep::testing
