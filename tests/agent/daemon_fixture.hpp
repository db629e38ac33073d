#pragma once

// A daemon over a simulated device (simulated_device.hpp) whose reboots are only counted: the
// test reboots the device itself (SimulatedDevice::Boot) and starts a new daemon.

#include <gtest/gtest.h>

#include <memory>

#include "upkeep/agent/daemon.hpp"

namespace upkeep::testing {

inline std::unique_ptr<agent::Daemon> CountingRebootsDaemon(const agent::AgentConfig& config,
                                                            Filesystem& fs, const Clock& clock,
                                                            agent::RandomSource& random,
                                                            int& reboots) {
  agent::DaemonOptions o;
  o.reboot = [&reboots]() -> Result<void> {
    ++reboots;
    return Ok();
  };
  auto d = agent::Daemon::Create(config, fs, clock, random, o);
  EXPECT_TRUE(d) << d.error().ToString();
  return d ? std::move(*d) : nullptr;
}

}  // namespace upkeep::testing
