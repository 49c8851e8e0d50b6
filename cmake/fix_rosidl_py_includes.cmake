# Passed as -DCMAKE_PROJECT_INCLUDE=... when fillcls_msgs is built against the ROS 2 PyPI wheels.
#
# The wheels' exported `<pkg>__rosidl_generator_py` targets carry the include directories of the
# interpreter they were built with (/opt/python/...). This file replaces them, once every target
# is imported (deferred to the end of the top directory), with the include directories of the
# Python interpreter and NumPy used for this build (Python3_EXECUTABLE).
function(_fillcls_fix_rosidl_py_includes)
  if(NOT Python3_EXECUTABLE)
    message(FATAL_ERROR "fix_rosidl_py_includes: set -DPython3_EXECUTABLE=<the venv's python>")
  endif()
  execute_process(
    COMMAND "${Python3_EXECUTABLE}" -c
      "import sysconfig, numpy; print(sysconfig.get_paths()['include'] + ';' + numpy.get_include(), end='')"
    OUTPUT_VARIABLE _good_dirs RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "fix_rosidl_py_includes: ${Python3_EXECUTABLE} could not report its include dirs")
  endif()
  get_directory_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" IMPORTED_TARGETS)
  foreach(_t IN LISTS _targets)
    if(_t MATCHES "__rosidl_generator_py$")
      get_target_property(_dirs ${_t} INTERFACE_INCLUDE_DIRECTORIES)
      if(_dirs)
        list(FILTER _dirs EXCLUDE REGEX "^/opt/python/")
        list(APPEND _dirs ${_good_dirs})
        list(REMOVE_DUPLICATES _dirs)
        set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_dirs}")
      endif()
    endif()
  endforeach()
endfunction()
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _fillcls_fix_rosidl_py_includes)
