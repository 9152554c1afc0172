# Warnings on our own targets only; dependencies come in as SYSTEM/imported targets.
function(kvsim_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion
                                           -Wno-sign-conversion)
  if(KVSIM_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
