#include "io/json_file.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <set>
#include <vector>

#include "core/error.h"
#include "io/names.h"
#include "io/posix_file.h"
#include "io/utf8.h"

namespace moeprep::io {

nlohmann::json parse_json_strict(std::string_view text, const std::string& context) {
  if (auto bad = first_invalid_utf8(text))
    throw_bad_input(context + ": not valid UTF-8 (byte " + std::to_string(*bad) + ")");
  // nlohmann's reader takes a NUL as the end of input and would ignore whatever follows it.
  if (auto nul = text.find('\0'); nul != std::string_view::npos)
    throw_bad_input(context + ": contains a NUL byte at " + std::to_string(nul));
  std::vector<std::set<std::string>> keys_of_open_objects;
  auto on_event = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) keys_of_open_objects.emplace_back();
    if (event == E::object_end) keys_of_open_objects.pop_back();
    if (event == E::key && !keys_of_open_objects.back().insert(parsed.get<std::string>()).second)
      throw_bad_input(context + ": duplicate key '" + printable(parsed.get<std::string>()) + "'");
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), on_event);
  } catch (const nlohmann::json::exception& e) {
    std::string what = e.what();
    auto tag_end = what.find("] ");
    if (tag_end != std::string::npos) what = what.substr(tag_end + 2);
    throw_bad_input(context + ": not valid JSON: " + printable(what, 200));
  }
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  const std::string name = path.string();
  UniqueFd fd = open_or_throw(path, O_RDONLY | O_NONBLOCK);  // O_NONBLOCK: a FIFO must not hang open
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_io(name + ": cannot stat");
  if (!S_ISREG(st.st_mode)) throw_bad_input(name + ": not a regular file");
  if (static_cast<uint64_t>(st.st_size) > kMaxJsonFileBytes)
    throw_bad_input(name + ": " + std::to_string(st.st_size) + " bytes, over the limit of " +
                    std::to_string(kMaxJsonFileBytes) + " for a JSON file");
  std::string text(static_cast<size_t>(st.st_size), '\0');
  text.resize(read_up_to(fd.get(), text.data(), text.size(), name));
  return parse_json_strict(text, name);
}

}  // namespace moeprep::io
