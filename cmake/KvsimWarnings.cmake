# Warnings on our own targets only; dependencies come in as SYSTEM/imported targets.
function(kvsim_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion
                                           -Wno-sign-conversion)
  # GCC 12 reports -W(maybe-)uninitialized inside its own AVX-512 intrinsics (_mm512_undefined_*
  # is written `__m512 __Y = __Y;`) when Eigen's packet code is inlined into ours with
  # -march=native: a false positive in a system header, fixed in GCC 13.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13 AND
     KVSIM_NATIVE)
    target_compile_options(${target} PRIVATE -Wno-maybe-uninitialized -Wno-uninitialized)
  endif()
  if(KVSIM_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
