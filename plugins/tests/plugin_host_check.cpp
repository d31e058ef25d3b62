/*
 * ffexport_plugin_host_check: drives the plugins' creators and build-time methods the way TensorRT
 * does (through IPluginCreatorV3One and getCapabilityInterface), on the host only: no GPU, no
 * libnvinfer. Checks names, attributes, output types, format support, configure/shape validation,
 * workspace sizes and the serialize -> create round trip; bad attributes and shapes must be refused
 * (nullptr / -1) with a message on stderr, never a throw or an abort.
 *
 * Prints one line per check; exit status 0 when all pass.
 */
#include "frameFusionMergePlugin.h"
#include "frameFusionPrunePlugin.h"

#include <cstdio>
#include <cstring>
#include <memory>

using namespace nvinfer1;
using ffexport::plugin::FrameFusionMergePluginCreator;
using ffexport::plugin::FrameFusionPrunePluginCreator;

namespace
{

int gFailures = 0;

void expect(bool condition, char const* what)
{
    std::printf("%s %s\n", condition ? "ok  " : "FAIL", what);
    std::fflush(stdout);
    gFailures += condition ? 0 : 1;
}

struct PluginDeleter
{
    void operator()(IPluginV3* plugin) const
    {
        delete plugin;
    }
};
using PluginPtr = std::unique_ptr<IPluginV3, PluginDeleter>;

Dims dims(std::initializer_list<int64_t> values)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(values.size());
    int32_t i = 0;
    for (int64_t v : values)
    {
        d.d[i++] = v;
    }
    return d;
}

DynamicPluginTensorDesc tensor(Dims const& d, DataType type)
{
    DynamicPluginTensorDesc desc{};
    desc.desc.dims = d;
    desc.desc.type = type;
    desc.desc.format = TensorFormat::kLINEAR;
    desc.min = d;
    desc.max = d;
    desc.opt = d;
    return desc;
}

PluginPtr createMerge(IPluginCreatorV3One& creator, int32_t remove, int32_t patches, int32_t maxRun)
{
    PluginField fields[] = {
        PluginField("remove", &remove, PluginFieldType::kINT32, 1),
        PluginField("patches_per_frame", &patches, PluginFieldType::kINT32, 1),
        PluginField("max_run", &maxRun, PluginFieldType::kINT32, 1),
    };
    PluginFieldCollection collection{3, fields};
    std::fprintf(stderr, "-- createPlugin(FrameFusionMerge, remove=%d, P=%d, max_run=%d)\n", remove, patches, maxRun);
    return PluginPtr(creator.createPlugin("merge", &collection, TensorRTPhase::kBUILD));
}

void checkMerge()
{
    FrameFusionMergePluginCreator creator;
    IPluginCreatorV3One& api = creator;
    expect(std::strcmp(api.getPluginName(), "FrameFusionMerge") == 0, "merge creator name");
    expect(std::strcmp(api.getPluginVersion(), "1") == 0, "merge creator version");
    expect(std::strcmp(api.getPluginNamespace(), "ffexport") == 0, "merge creator namespace");
    PluginFieldCollection const* names = api.getFieldNames();
    expect(names != nullptr && names->nbFields == 3 && std::strcmp(names->fields[0].name, "remove") == 0
            && std::strcmp(names->fields[1].name, "patches_per_frame") == 0
            && std::strcmp(names->fields[2].name, "max_run") == 0,
        "merge field names");

    PluginPtr plugin = createMerge(api, 3, 4, 3);
    expect(plugin != nullptr, "merge created from valid attributes");
    if (!plugin)
    {
        return;
    }
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    expect(core != nullptr && build != nullptr && runtime != nullptr, "merge capabilities");
    expect(std::strcmp(core->getPluginName(), "FrameFusionMerge") == 0
            && std::strcmp(core->getPluginNamespace(), "ffexport") == 0,
        "merge plugin name and namespace");
    expect(build->getNbOutputs() == 2, "merge has 2 outputs");

    DataType inTypes[2] = {DataType::kHALF, DataType::kINT64};
    DataType outTypes[2] = {DataType::kFLOAT, DataType::kFLOAT};
    expect(build->getOutputDataTypes(outTypes, 2, inTypes, 2) == 0 && outTypes[0] == DataType::kINT64
            && outTypes[1] == DataType::kHALF,
        "merge output types: int64 kept, values as visual");
    inTypes[0] = DataType::kINT8;
    std::fprintf(stderr, "-- getOutputDataTypes(int8 visual)\n");
    expect(build->getOutputDataTypes(outTypes, 2, inTypes, 2) != 0, "merge refuses int8 visual types");

    DynamicPluginTensorDesc io[4] = {tensor(dims({12, 5}), DataType::kBF16), tensor(dims({12}), DataType::kINT64),
        tensor(dims({9}), DataType::kINT64), tensor(dims({9, 5}), DataType::kBF16)};
    bool all = true;
    for (int32_t pos = 0; pos < 4; ++pos)
    {
        all = all && build->supportsFormatCombination(pos, io, 2, 2);
    }
    expect(all, "merge supports bf16 visual, int64 ids and outputs");
    io[3].desc.type = DataType::kFLOAT;
    expect(!build->supportsFormatCombination(3, io, 2, 2), "merge refuses values of another type than visual");
    io[3].desc.type = DataType::kBF16;
    io[1].desc.type = DataType::kINT32;
    expect(!build->supportsFormatCombination(1, io, 2, 2), "merge refuses int32 patch ids");
    io[1].desc.type = DataType::kINT64;
    io[0].desc.format = TensorFormat::kCHW32;
    expect(!build->supportsFormatCombination(0, io, 2, 2), "merge refuses non-linear formats");
    io[0].desc.format = TensorFormat::kLINEAR;

    expect(build->configurePlugin(io, 2, io + 2, 2) == 0, "merge configures for n=12, D=5");
    DynamicPluginTensorDesc small[4] = {tensor(dims({3, 5}), DataType::kBF16), tensor(dims({3}), DataType::kINT64),
        io[2], io[3]};
    std::fprintf(stderr, "-- configurePlugin(n=3)\n");
    expect(build->configurePlugin(small, 2, small + 2, 2) != 0, "merge refuses remove >= n at configure");
    DynamicPluginTensorDesc threeD[4] = {tensor(dims({12, 5, 1}), DataType::kBF16), io[1], io[2], io[3]};
    std::fprintf(stderr, "-- configurePlugin(3-D visual)\n");
    expect(build->configurePlugin(threeD, 2, threeD + 2, 2) != 0, "merge refuses a 3-D visual");
    expect(build->getWorkspaceSize(io, 2, io + 2, 2) > 0, "merge asks for a workspace");

    PluginTensorDesc shapes[2] = {io[0].desc, io[1].desc};
    PluginTensorDesc outs[2] = {io[2].desc, io[3].desc};
    expect(runtime->onShapeChange(shapes, 2, outs, 2) == 0, "merge accepts its shapes at runtime");

    PluginFieldCollection const* saved = runtime->getFieldsToSerialize();
    PluginPtr restored(saved != nullptr ? api.createPlugin("merge", saved, TensorRTPhase::kRUNTIME) : nullptr);
    expect(restored != nullptr, "merge round trip: serialized fields create a plugin");
    if (restored)
    {
        auto* again = static_cast<IPluginV3OneBuild*>(restored->getCapabilityInterface(PluginCapabilityType::kBUILD));
        std::fprintf(stderr, "-- configurePlugin(n=3) on the restored plugin\n");
        expect(again->configurePlugin(small, 2, small + 2, 2) != 0 && again->configurePlugin(io, 2, io + 2, 2) == 0,
            "merge round trip keeps the attributes");
    }
    PluginPtr copy(plugin->clone());
    expect(copy != nullptr, "merge clone");
    PluginPtr attached(runtime->attachToContext(nullptr));
    expect(attached != nullptr, "merge attachToContext");

    expect(createMerge(api, 0, 4, 3) == nullptr, "merge refuses remove=0");
    expect(createMerge(api, 3, 0, 3) == nullptr, "merge refuses patches_per_frame=0");
    expect(createMerge(api, 3, 4, 0) == nullptr, "merge refuses max_run=0");
    int32_t remove = 3;
    PluginField partial[] = {PluginField("remove", &remove, PluginFieldType::kINT32, 1)};
    PluginFieldCollection missing{1, partial};
    std::fprintf(stderr, "-- createPlugin(FrameFusionMerge, only remove)\n");
    expect(PluginPtr(api.createPlugin("merge", &missing, TensorRTPhase::kBUILD)) == nullptr,
        "merge refuses missing attributes");
    float wrong = 3.0f;
    PluginField floats[] = {PluginField("remove", &wrong, PluginFieldType::kFLOAT32, 1)};
    PluginFieldCollection wrongType{1, floats};
    std::fprintf(stderr, "-- createPlugin(FrameFusionMerge, float remove)\n");
    expect(PluginPtr(api.createPlugin("merge", &wrongType, TensorRTPhase::kBUILD)) == nullptr,
        "merge refuses a float attribute");
    std::fprintf(stderr, "-- createPlugin(FrameFusionMerge, no fields)\n");
    expect(PluginPtr(api.createPlugin("merge", nullptr, TensorRTPhase::kBUILD)) == nullptr,
        "merge refuses a null field collection");
}

void checkPrune()
{
    FrameFusionPrunePluginCreator creator;
    IPluginCreatorV3One& api = creator;
    expect(std::strcmp(api.getPluginName(), "FrameFusionPrune") == 0
            && std::strcmp(api.getPluginNamespace(), "ffexport") == 0 && std::strcmp(api.getPluginVersion(), "1") == 0,
        "prune creator name, namespace, version");
    int64_t keep = 7; // an int64 field is accepted too
    PluginField fields[] = {PluginField("keep", &keep, PluginFieldType::kINT64, 1)};
    PluginFieldCollection collection{1, fields};
    PluginPtr plugin(api.createPlugin("prune", &collection, TensorRTPhase::kBUILD));
    expect(plugin != nullptr, "prune created from keep=7");
    if (!plugin)
    {
        return;
    }
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    DataType in = DataType::kFLOAT;
    DataType out = DataType::kFLOAT;
    expect(build->getNbOutputs() == 1 && build->getOutputDataTypes(&out, 1, &in, 1) == 0 && out == DataType::kINT64,
        "prune output type int64");
    in = DataType::kHALF;
    std::fprintf(stderr, "-- getOutputDataTypes(fp16 importance)\n");
    expect(build->getOutputDataTypes(&out, 1, &in, 1) != 0, "prune refuses fp16 importance");
    DynamicPluginTensorDesc io[2] = {tensor(dims({10}), DataType::kFLOAT), tensor(dims({7}), DataType::kINT64)};
    expect(build->supportsFormatCombination(0, io, 1, 1) && build->supportsFormatCombination(1, io, 1, 1),
        "prune supports float32 in, int64 out");
    io[0].desc.type = DataType::kHALF;
    expect(!build->supportsFormatCombination(0, io, 1, 1), "prune refuses fp16 importance formats");
    io[0].desc.type = DataType::kFLOAT;
    expect(build->configurePlugin(io, 1, io + 1, 1) == 0, "prune configures for n=10");
    DynamicPluginTensorDesc small[2] = {tensor(dims({7}), DataType::kFLOAT), io[1]};
    std::fprintf(stderr, "-- configurePlugin(n=7, keep=7)\n");
    expect(build->configurePlugin(small, 1, small + 1, 1) != 0, "prune refuses keep >= n at configure");
    expect(build->getWorkspaceSize(io, 1, io + 1, 1) > 0, "prune asks for a workspace");
    PluginFieldCollection const* saved = runtime->getFieldsToSerialize();
    PluginPtr restored(saved != nullptr ? api.createPlugin("prune", saved, TensorRTPhase::kRUNTIME) : nullptr);
    expect(restored != nullptr, "prune round trip");
    int32_t zero = 0;
    PluginField bad[] = {PluginField("keep", &zero, PluginFieldType::kINT32, 1)};
    PluginFieldCollection badCollection{1, bad};
    std::fprintf(stderr, "-- createPlugin(FrameFusionPrune, keep=0)\n");
    expect(PluginPtr(api.createPlugin("prune", &badCollection, TensorRTPhase::kBUILD)) == nullptr,
        "prune refuses keep=0");
}

} // namespace

int main()
{
    checkMerge();
    checkPrune();
    std::printf(gFailures == 0 ? "all plugin host checks passed\n" : "%d plugin host checks FAILED\n", gFailures);
    return gFailures == 0 ? 0 : 1;
}
