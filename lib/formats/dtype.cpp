#include "formats/dtype.h"

#include <array>
#include <utility>

namespace moeprep {
namespace {

struct DtypeInfo {
  Dtype dtype;
  const char* name;
  int bits;
};

constexpr std::array<DtypeInfo, 22> kDtypes = {{
    {Dtype::BOOL, "BOOL", 8},         {Dtype::F4, "F4", 4},
    {Dtype::F6_E2M3, "F6_E2M3", 6},   {Dtype::F6_E3M2, "F6_E3M2", 6},
    {Dtype::U8, "U8", 8},             {Dtype::I8, "I8", 8},
    {Dtype::F8_E5M2, "F8_E5M2", 8},   {Dtype::F8_E4M3, "F8_E4M3", 8},
    {Dtype::F8_E8M0, "F8_E8M0", 8},   {Dtype::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8},
    {Dtype::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8}, {Dtype::I16, "I16", 16},
    {Dtype::U16, "U16", 16},          {Dtype::F16, "F16", 16},
    {Dtype::BF16, "BF16", 16},        {Dtype::I32, "I32", 32},
    {Dtype::U32, "U32", 32},          {Dtype::F32, "F32", 32},
    {Dtype::C64, "C64", 64},          {Dtype::F64, "F64", 64},
    {Dtype::I64, "I64", 64},          {Dtype::U64, "U64", 64},
}};

const DtypeInfo& info(Dtype d) {
  for (const auto& i : kDtypes)
    if (i.dtype == d) return i;
  return kDtypes[0];
}

}  // namespace

std::optional<Dtype> dtype_from_name(std::string_view name) {
  for (const auto& i : kDtypes)
    if (name == i.name) return i.dtype;
  return std::nullopt;
}

const char* dtype_name(Dtype dtype) { return info(dtype).name; }
int dtype_bits(Dtype dtype) { return info(dtype).bits; }

std::optional<int64_t> dtype_byte_length(Dtype dtype, int64_t numel) {
  if (numel < 0) return std::nullopt;
  int64_t bits = dtype_bits(dtype);
  if (numel > INT64_MAX / bits) return std::nullopt;
  int64_t total = numel * bits;
  if (total % 8 != 0) return std::nullopt;
  return total / 8;
}

}  // namespace moeprep
