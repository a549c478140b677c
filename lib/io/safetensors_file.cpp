// SafetensorsFile: a read-only private mapping of the whole file. Only the 8-byte length and
// the header are read at open; tensor pages are faulted in when a caller reads data().
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>


#include "core/error.h"
#include "io/mapped_input_guard.h"
#include "io/posix_file.h"
#include "io/safetensors.h"

namespace moeprep::io {
namespace {

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string name = path.string();
  UniqueFd fd = open_or_throw(path, O_RDONLY | O_NONBLOCK);  // O_NONBLOCK: a FIFO must not hang open
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_io(name + ": cannot stat");
  if (!S_ISREG(st.st_mode)) throw_bad_input(name + ": not a regular file");
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8)
    throw_bad_input(name + ": file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");

  // Nothing is allocated from the declared length before it is checked against both limits.
  uint8_t length_bytes[8];
  if (read_up_to(fd.get(), length_bytes, 8, name) != 8)
    throw_bad_input(name + ": file shrank while being opened");
  uint64_t header_length = read_le64(length_bytes);
  if (header_length > kMaxHeaderBytes)
    throw_bad_input(name + ": header length " + std::to_string(header_length) + " exceeds the limit of " +
                    std::to_string(kMaxHeaderBytes) + " bytes");
  if (header_length > size - 8)
    throw_bad_input(name + ": header length " + std::to_string(header_length) + " runs past the end of the file (" +
                    std::to_string(size) + " bytes)");

  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (map == MAP_FAILED) throw_io(name + ": cannot mmap " + std::to_string(size) + " bytes");

  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = static_cast<const uint8_t*>(map);
  file->file_size_ = size;
  file->guard_slot_ = register_mapped_input(map, size, path);
  file->data_start_ = 8 + header_length;
  std::string_view header_text(reinterpret_cast<const char*>(file->map_) + 8, header_length);
  try {
    file->header_ = parse_header(header_text, size - file->data_start_, name);
  } catch (const Error&) {
    throw_if_mapped_input_changed();  // zeros read from a file cut short are not a bad header
    throw;
  }
  for (size_t i = 0; i < file->header_.tensors.size(); ++i) file->by_name_.emplace(file->header_.tensors[i].name, i);
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  unregister_mapped_input(guard_slot_);
  if (map_) ::munmap(const_cast<uint8_t*>(map_), file_size_);
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &header_.tensors[it->second];
}

ByteView SafetensorsFile::data(const TensorInfo& tensor) const {
  // A TensorInfo from another file would silently read the wrong bytes; refuse it.
  const TensorInfo* own = find(tensor.name);
  if (!own || own->begin != tensor.begin || own->end != tensor.end)
    throw_internal(path_.string() + ": tensor '" + tensor.name + "' does not belong to this file");
  return {map_ + data_start_ + own->begin, static_cast<size_t>(own->byte_length())};
}

ByteView SafetensorsFile::whole_file() const { return {map_, static_cast<size_t>(file_size_)}; }

}  // namespace moeprep::io
