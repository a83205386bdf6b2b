/* amdsmi_status_code_to_string: static strings, as in the real library. */
#include "emu_api.h"

struct status_name {
    amdsmi_status_t code;
    const char *text;
};

static const struct status_name names[] = {
    {AMDSMI_STATUS_SUCCESS, "AMDSMI_STATUS_SUCCESS: Call succeeded"},
    {AMDSMI_STATUS_INVAL, "AMDSMI_STATUS_INVAL: Invalid parameters"},
    {AMDSMI_STATUS_NOT_SUPPORTED, "AMDSMI_STATUS_NOT_SUPPORTED: Command not supported"},
    {AMDSMI_STATUS_NOT_YET_IMPLEMENTED, "AMDSMI_STATUS_NOT_YET_IMPLEMENTED: Not implemented yet"},
    {AMDSMI_STATUS_FAIL_LOAD_MODULE, "AMDSMI_STATUS_FAIL_LOAD_MODULE: Fail to load lib"},
    {AMDSMI_STATUS_FAIL_LOAD_SYMBOL, "AMDSMI_STATUS_FAIL_LOAD_SYMBOL: Fail to load symbol"},
    {AMDSMI_STATUS_DRM_ERROR, "AMDSMI_STATUS_DRM_ERROR: Error when call libdrm"},
    {AMDSMI_STATUS_API_FAILED, "AMDSMI_STATUS_API_FAILED: API call failed"},
    {AMDSMI_STATUS_TIMEOUT, "AMDSMI_STATUS_TIMEOUT: Timeout in API call"},
    {AMDSMI_STATUS_RETRY, "AMDSMI_STATUS_RETRY: Retry operation"},
    {AMDSMI_STATUS_NO_PERM, "AMDSMI_STATUS_NO_PERM: Permission Denied"},
    {AMDSMI_STATUS_INTERRUPT, "AMDSMI_STATUS_INTERRUPT: An interrupt occurred during execution of function"},
    {AMDSMI_STATUS_IO, "AMDSMI_STATUS_IO: I/O Error"},
    {AMDSMI_STATUS_ADDRESS_FAULT, "AMDSMI_STATUS_ADDRESS_FAULT: Bad address"},
    {AMDSMI_STATUS_FILE_ERROR, "AMDSMI_STATUS_FILE_ERROR: Problem accessing a file"},
    {AMDSMI_STATUS_OUT_OF_RESOURCES, "AMDSMI_STATUS_OUT_OF_RESOURCES: Not enough memory"},
    {AMDSMI_STATUS_INTERNAL_EXCEPTION, "AMDSMI_STATUS_INTERNAL_EXCEPTION: An internal exception was caught"},
    {AMDSMI_STATUS_INPUT_OUT_OF_BOUNDS, "AMDSMI_STATUS_INPUT_OUT_OF_BOUNDS: The provided input is out of allowable or safe range"},
    {AMDSMI_STATUS_INIT_ERROR, "AMDSMI_STATUS_INIT_ERROR: An error occurred when initializing internal data structures"},
    {AMDSMI_STATUS_REFCOUNT_OVERFLOW, "AMDSMI_STATUS_REFCOUNT_OVERFLOW: An internal reference counter exceeded INT32_MAX"},
    {AMDSMI_STATUS_DIRECTORY_NOT_FOUND, "AMDSMI_STATUS_DIRECTORY_NOT_FOUND: Error when a directory is not found"},
    {AMDSMI_STATUS_BUSY, "AMDSMI_STATUS_BUSY: Device busy"},
    {AMDSMI_STATUS_NOT_FOUND, "AMDSMI_STATUS_NOT_FOUND: Device Not found"},
    {AMDSMI_STATUS_NOT_INIT, "AMDSMI_STATUS_NOT_INIT: Device not initialized"},
    {AMDSMI_STATUS_NO_SLOT, "AMDSMI_STATUS_NO_SLOT: No more free slot"},
    {AMDSMI_STATUS_DRIVER_NOT_LOADED, "AMDSMI_STATUS_DRIVER_NOT_LOADED: Processor driver not loaded"},
    {AMDSMI_STATUS_MORE_DATA, "AMDSMI_STATUS_MORE_DATA: There is more data than the buffer size"},
    {AMDSMI_STATUS_NO_DATA, "AMDSMI_STATUS_NO_DATA: No data was found for a given input"},
    {AMDSMI_STATUS_INSUFFICIENT_SIZE, "AMDSMI_STATUS_INSUFFICIENT_SIZE: Not enough resources were available for the operation"},
    {AMDSMI_STATUS_UNEXPECTED_SIZE, "AMDSMI_STATUS_UNEXPECTED_SIZE: An unexpected amount of data was read"},
    {AMDSMI_STATUS_UNEXPECTED_DATA, "AMDSMI_STATUS_UNEXPECTED_DATA: The data read or provided to function is not what was expected"},
    {AMDSMI_STATUS_NON_AMD_CPU, "AMDSMI_STATUS_NON_AMD_CPU: System has different cpu than AMD"},
    {AMDSMI_STATUS_NO_ENERGY_DRV, "AMDSMI_STATUS_NO_ENERGY_DRV: Energy driver not found"},
    {AMDSMI_STATUS_NO_MSR_DRV, "AMDSMI_STATUS_NO_MSR_DRV: MSR driver not found"},
    {AMDSMI_STATUS_NO_HSMP_DRV, "AMDSMI_STATUS_NO_HSMP_DRV: HSMP driver not found"},
    {AMDSMI_STATUS_NO_HSMP_SUP, "AMDSMI_STATUS_NO_HSMP_SUP: HSMP not supported"},
    {AMDSMI_STATUS_NO_HSMP_MSG_SUP, "AMDSMI_STATUS_NO_HSMP_MSG_SUP: HSMP message/feature not supported"},
    {AMDSMI_STATUS_HSMP_TIMEOUT, "AMDSMI_STATUS_HSMP_TIMEOUT: HSMP message timed out"},
    {AMDSMI_STATUS_NO_DRV, "AMDSMI_STATUS_NO_DRV: No Energy and HSMP driver present"},
    {AMDSMI_STATUS_FILE_NOT_FOUND, "AMDSMI_STATUS_FILE_NOT_FOUND: file or directory not found"},
    {AMDSMI_STATUS_ARG_PTR_NULL, "AMDSMI_STATUS_ARG_PTR_NULL: Parsed argument is invalid"},
    {AMDSMI_STATUS_AMDGPU_RESTART_ERR, "AMDSMI_STATUS_AMDGPU_RESTART_ERR: AMDGPU restart failed"},
    {AMDSMI_STATUS_SETTING_UNAVAILABLE, "AMDSMI_STATUS_SETTING_UNAVAILABLE: Setting is not available"},
    {AMDSMI_STATUS_CORRUPTED_EEPROM, "AMDSMI_STATUS_CORRUPTED_EEPROM: EEPROM is corrupted"},
    {AMDSMI_STATUS_MAP_ERROR, "AMDSMI_STATUS_MAP_ERROR: The internal library error did not map to a status code"},
    {AMDSMI_STATUS_UNKNOWN_ERROR, "AMDSMI_STATUS_UNKNOWN_ERROR: An unknown error occurred"},
};

AMDSMI_API amdsmi_status_t amdsmi_status_code_to_string(amdsmi_status_t status, const char **text)
{
    if (text == NULL)
        return AMDSMI_STATUS_INVAL;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (names[i].code == status) {
            *text = names[i].text;
            return AMDSMI_STATUS_SUCCESS;
        }
    }
    *text = "An unknown error occurred";
    return AMDSMI_STATUS_SUCCESS;
}
