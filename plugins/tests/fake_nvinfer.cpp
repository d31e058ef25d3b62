/*
 * A stand-in for libnvinfer's plugin registry, for tests on machines without TensorRT: it records
 * the creators a plugin library registers when loaded (REGISTER_TENSORRT_PLUGIN) and answers
 * getCreator. Built only by tests (tests/plugins/test_native_build.py) into a fake TensorRT_ROOT, to
 * exercise the CMake branch that links libffexport_plugins.so and the library's load-time behaviour.
 * It is not TensorRT: nothing else works through it.
 */
#include <NvInferRuntime.h>

#pragma GCC diagnostic ignored "-Wdeprecated-declarations" // the interface still declares the V2 methods

#include <cstring>
#include <string>
#include <vector>

namespace
{

class RecordingRegistry : public nvinfer1::IPluginRegistry
{
public:
    bool registerCreator(nvinfer1::IPluginCreator&, nvinfer1::AsciiChar const* const) noexcept override
    {
        return false;
    }
    nvinfer1::IPluginCreator* const* getPluginCreatorList(int32_t* const count) const noexcept override
    {
        *count = 0;
        return nullptr;
    }
    nvinfer1::IPluginCreator* getPluginCreator(
        nvinfer1::AsciiChar const* const, nvinfer1::AsciiChar const* const, nvinfer1::AsciiChar const* const) noexcept override
    {
        return nullptr;
    }
    void setErrorRecorder(nvinfer1::IErrorRecorder* const) noexcept override {}
    nvinfer1::IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
    bool deregisterCreator(nvinfer1::IPluginCreator const&) noexcept override
    {
        return false;
    }
    bool isParentSearchEnabled() const override
    {
        return false;
    }
    void setParentSearchEnabled(bool const) override {}
    PluginLibraryHandle loadLibrary(nvinfer1::AsciiChar const*) noexcept override
    {
        return nullptr;
    }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    bool registerCreator(nvinfer1::IPluginCreatorInterface& creator, nvinfer1::AsciiChar const* const) noexcept override
    {
        for (auto* known : mCreators)
        {
            if (known == &creator)
            {
                return false;
            }
        }
        mCreators.push_back(&creator);
        return true;
    }
    nvinfer1::IPluginCreatorInterface* const* getAllCreators(int32_t* const count) const noexcept override
    {
        *count = static_cast<int32_t>(mCreators.size());
        return mCreators.data();
    }
    nvinfer1::IPluginCreatorInterface* getCreator(nvinfer1::AsciiChar const* const name,
        nvinfer1::AsciiChar const* const version, nvinfer1::AsciiChar const* const pluginNamespace) noexcept override
    {
        for (auto* creator : mCreators)
        {
            auto* v3 = static_cast<nvinfer1::IPluginCreatorV3One*>(creator);
            if (std::strcmp(v3->getPluginName(), name) == 0 && std::strcmp(v3->getPluginVersion(), version) == 0
                && std::strcmp(v3->getPluginNamespace(), pluginNamespace) == 0)
            {
                return creator;
            }
        }
        return nullptr;
    }
    bool deregisterCreator(nvinfer1::IPluginCreatorInterface const&) noexcept override
    {
        return false;
    }
    nvinfer1::IPluginResource* acquirePluginResource(nvinfer1::AsciiChar const*, nvinfer1::IPluginResource*) noexcept override
    {
        return nullptr;
    }
    int32_t releasePluginResource(nvinfer1::AsciiChar const*) noexcept override
    {
        return 0;
    }
    nvinfer1::IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const count) noexcept override
    {
        return getAllCreators(count);
    }

private:
    std::vector<nvinfer1::IPluginCreatorInterface*> mCreators;
};

RecordingRegistry& registry()
{
    static RecordingRegistry instance;
    return instance;
}

} // namespace

extern "C" TENSORRTAPI nvinfer1::IPluginRegistry* getPluginRegistry() noexcept
{
    return &registry();
}

//! For the tests: "Name/version/namespace" of each registered creator, ';'-separated.
extern "C" TENSORRTAPI int fake_nvinfer_registered(char* out, size_t size) noexcept
{
    std::string text;
    int32_t count = 0;
    auto* const* creators = registry().getAllCreators(&count);
    for (int32_t i = 0; i < count; ++i)
    {
        auto* v3 = static_cast<nvinfer1::IPluginCreatorV3One*>(creators[i]);
        text += std::string(v3->getPluginName()) + "/" + v3->getPluginVersion() + "/" + v3->getPluginNamespace() + ";";
    }
    std::strncpy(out, text.c_str(), size - 1);
    out[size - 1] = '\0';
    return count;
}
