#pragma once

// U-Boot environment images, byte for byte as U-Boot and libubootenv store them, so that tests can
// put a valid environment on a block device and inspect what the adapter wrote without going
// through libubootenv:
//
//   CRC32 (4 bytes, little-endian) of the data area
//   flag  (1 byte, redundant environments only; the copy with the newer flag is current)
//   data  "name=value\0" entries, a final "\0", padded with 0x00 to the environment size
//
// The CRC is zlib's crc32 (reflected, polynomial 0xEDB88320) over the data area.

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace upkeep::testing {

inline std::uint32_t Crc32(std::string_view data) {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t crc = 0xFFFFFFFFu;
  for (char ch : data) {
    crc = table[(crc ^ static_cast<unsigned char>(ch)) & 0xFFu] ^ (crc >> 8);
  }
  return crc ^ 0xFFFFFFFFu;
}

struct UBootEnvCopy {
  std::optional<std::uint8_t> flag;  // redundant environments only
  std::map<std::string, std::string> vars;
};

// One environment copy of `env_size` bytes. `flag` is set for a redundant environment.
inline std::string MakeUBootEnvImage(const std::vector<std::pair<std::string, std::string>>& vars,
                                     std::size_t env_size, std::optional<std::uint8_t> flag) {
  const std::size_t header = flag ? 5 : 4;
  std::string data;
  for (const auto& [name, value] : vars) {
    data += name;
    data += '=';
    data += value;
    data += '\0';
  }
  data += '\0';
  if (header + data.size() > env_size) return {};
  data.resize(env_size - header, '\0');
  const std::uint32_t crc = Crc32(data);
  std::string image;
  for (int shift = 0; shift < 32; shift += 8) {
    image += static_cast<char>((crc >> shift) & 0xFFu);
  }
  if (flag) image += static_cast<char>(*flag);
  return image + data;
}

// The copy held in `image` (exactly one environment's bytes), or nullopt when its CRC is wrong.
inline std::optional<UBootEnvCopy> ParseUBootEnvImage(std::string_view image, bool redundant) {
  const std::size_t header = redundant ? 5 : 4;
  if (image.size() <= header) return std::nullopt;
  std::uint32_t stored = 0;
  for (std::size_t i = 0; i < 4; ++i) {
    stored |= static_cast<std::uint32_t>(static_cast<unsigned char>(image[i])) << (8 * i);
  }
  const std::string_view data = image.substr(header);
  if (Crc32(data) != stored) return std::nullopt;
  UBootEnvCopy copy;
  if (redundant) copy.flag = static_cast<std::uint8_t>(image[4]);
  std::size_t pos = 0;
  while (pos < data.size() && data[pos] != '\0') {
    const std::size_t end = data.find('\0', pos);
    if (end == std::string_view::npos) return std::nullopt;
    const std::string_view entry = data.substr(pos, end - pos);
    const std::size_t eq = entry.find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    copy.vars[std::string(entry.substr(0, eq))] = std::string(entry.substr(eq + 1));
    pos = end + 1;
  }
  return copy;
}

}  // namespace upkeep::testing
