#include "upkeep/metadata/canonical_json.hpp"

#include <algorithm>
#include <set>
#include <vector>

namespace upkeep::metadata {

namespace {

// Thrown only inside the parser callback and caught in ParseJson.
struct RejectJson {
  std::string reason;
};

// Decodes UTF-8 (already validated by the parser) into UTF-16 code units, the order in which
// JavaScript's default sort (and so @tufjs/canonical-json) compares object keys.
std::u16string ToUtf16(const std::string& s) {
  std::u16string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    char32_t cp = 0;
    std::size_t len = 1;
    if (c < 0x80) {
      cp = c;
    } else if ((c >> 5) == 0x6) {
      cp = c & 0x1fu;
      len = 2;
    } else if ((c >> 4) == 0xe) {
      cp = c & 0x0fu;
      len = 3;
    } else {
      cp = c & 0x07u;
      len = 4;
    }
    for (std::size_t k = 1; k < len && i + k < s.size(); ++k) {
      cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3fu);
    }
    i += len;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      out.push_back(static_cast<char16_t>(0xd800 + (cp >> 10)));
      out.push_back(static_cast<char16_t>(0xdc00 + (cp & 0x3ff)));
    } else {
      out.push_back(static_cast<char16_t>(cp));
    }
  }
  return out;
}

void AppendString(std::string& out, const std::string& s) {
  out.push_back('"');
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out.push_back('\\');
    out.push_back(ch);
  }
  out.push_back('"');
}

Result<void> AppendCanonical(std::string& out, const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
      out += "null";
      return Ok();
    case Json::value_t::boolean:
      out += value.get<bool>() ? "true" : "false";
      return Ok();
    case Json::value_t::number_integer:
      out += std::to_string(value.get<std::int64_t>());
      return Ok();
    case Json::value_t::number_unsigned:
      out += std::to_string(value.get<std::uint64_t>());
      return Ok();
    case Json::value_t::string:
      AppendString(out, value.get_ref<const std::string&>());
      return Ok();
    case Json::value_t::array: {
      out.push_back('[');
      bool first = true;
      for (const auto& element : value) {
        if (!first) out.push_back(',');
        first = false;
        UPKEEP_TRY(AppendCanonical(out, element));
      }
      out.push_back(']');
      return Ok();
    }
    case Json::value_t::object: {
      // nlohmann orders keys by UTF-8 bytes; JavaScript orders by UTF-16 code units. The two
      // differ only when a key holds characters above U+FFFF, so re-sort in that case alone.
      std::vector<const std::string*> keys;
      keys.reserve(value.size());
      bool astral = false;
      for (const auto& item : value.items()) {
        keys.push_back(&item.key());
        for (char ch : item.key()) {
          if (static_cast<unsigned char>(ch) >= 0xf0) astral = true;
        }
      }
      if (astral) {
        std::vector<std::pair<std::u16string, const std::string*>> order;
        order.reserve(keys.size());
        for (const auto* k : keys) order.emplace_back(ToUtf16(*k), k);
        std::sort(order.begin(), order.end(),
                  [](const auto& a, const auto& b) { return a.first < b.first; });
        for (std::size_t i = 0; i < keys.size(); ++i) keys[i] = order[i].second;
      }
      out.push_back('{');
      bool first = true;
      for (const auto* k : keys) {
        if (!first) out.push_back(',');
        first = false;
        AppendString(out, *k);
        out.push_back(':');
        UPKEEP_TRY(AppendCanonical(out, value.at(*k)));
      }
      out.push_back('}');
      return Ok();
    }
    case Json::value_t::number_float:
      return Error(Errc::NotCanonicalizable, "floating-point numbers have no canonical form");
    case Json::value_t::binary:
    case Json::value_t::discarded:
      break;
  }
  return Error(Errc::NotCanonicalizable, "value has no JSON form");
}

}  // namespace

namespace {

// Parses a whole text.
auto FromText(std::string_view text) {
  return [text](const auto& callback) {
    // nothrow: Parse catches every exception of the parse and returns MalformedJson
    return Json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                       /*ignore_comments=*/false);
  };
}

// An error from a streaming element handler, carried out of nlohmann's parser.
struct ElementError {
  Error error;
};

// `read(callback)` runs nlohmann's parser over the input with the callback.
template <typename Read>
Result<Json> Parse(const Read& read, const std::string* array_key,
                   const std::function<Result<void>(const Json&)>* on_element) {
  // One set of seen keys per open object; arrays push an empty marker.
  std::vector<std::optional<std::set<std::string>>> open;
  std::string top_key;       // the last key of the top-level object
  bool in_stream = false;    // inside the streamed top-level array
  auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) -> bool {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        // nothrow: caught in Parse and returned as MalformedJson
        if (depth >= kMaxJsonDepth) throw RejectJson{"nesting deeper than 64 levels"};
        open.emplace_back();
        if (event == Json::parse_event_t::object_start) open.back().emplace();
        if (array_key != nullptr && event == Json::parse_event_t::array_start && depth == 1 &&
            top_key == *array_key) {
          in_stream = true;
        }
        break;
      case Json::parse_event_t::object_end:
      case Json::parse_event_t::array_end:
        open.pop_back();
        if (in_stream && depth == 1) {
          in_stream = false;
        } else if (in_stream && depth == 2) {
          // nothrow: caught in Parse and returned as the element's error
          if (auto r = (*on_element)(parsed); !r) throw ElementError{std::move(r).error()};
          return false;  // handed over: not kept in the document
        }
        break;
      case Json::parse_event_t::key:
        if (!open.empty() && open.back() &&
            !open.back()->insert(parsed.get<std::string>()).second) {
          // nothrow: caught in Parse and returned as MalformedJson
          throw RejectJson{"duplicate object key \"" + parsed.get<std::string>() + "\""};
        }
        if (depth == 1) top_key = parsed.get<std::string>();
        break;
      case Json::parse_event_t::value:
        if (in_stream && depth == 2) {
          // nothrow: caught in Parse and returned as the element's error
          if (auto r = (*on_element)(parsed); !r) throw ElementError{std::move(r).error()};
          return false;
        }
        break;
    }
    return true;
  };
  try {
    return read(callback);
  } catch (const RejectJson& e) {
    return Error(Errc::MalformedJson, e.reason);
  } catch (ElementError& e) {
    return std::move(e.error);
  } catch (const Json::exception& e) {
    return Error(Errc::MalformedJson, e.what());
  }
}

}  // namespace

Result<Json> ParseJson(std::string_view text) {
  return Parse(FromText(text), nullptr, nullptr);
}

Result<Json> ParseJsonStreaming(std::string_view text, const std::string& array_key,
                                const std::function<Result<void>(const Json&)>& on_element) {
  return Parse(FromText(text), &array_key, &on_element);
}

Result<Json> ParseJsonStreaming(std::istream& in, const std::string& array_key,
                                const std::function<Result<void>(const Json&)>& on_element) {
  return Parse(
      [&in](const auto& callback) {
        // nothrow: Parse catches every exception of the parse and returns MalformedJson
        return Json::parse(in, callback, /*allow_exceptions=*/true, /*ignore_comments=*/false);
      },
      &array_key, &on_element);
}

Result<std::string> Canonicalize(const Json& value) {
  std::string out;
  UPKEEP_TRY(AppendCanonical(out, value));
  return out;
}

}  // namespace upkeep::metadata
