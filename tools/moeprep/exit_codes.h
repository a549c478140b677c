#pragma once
#include "core/error.h"

namespace moeprep::cli {

// Documented in README.md; stable across versions.
enum ExitCode : int {
  kExitOk = 0,
  kExitVerificationFailed = 1,
  kExitUsage = 2,
  kExitBadInput = 3,
  kExitIo = 4,
  kExitInternal = 70,
};

inline int exit_code_for(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::BadInput: return kExitBadInput;
    case ErrorKind::Io: return kExitIo;
    case ErrorKind::Usage: return kExitUsage;
    case ErrorKind::Verification: return kExitVerificationFailed;
    case ErrorKind::Internal: return kExitInternal;
  }
  return kExitInternal;
}

}  // namespace moeprep::cli
