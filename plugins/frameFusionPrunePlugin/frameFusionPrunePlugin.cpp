#include "frameFusionPrunePlugin.h"

#include "frameFusionPruneKernel.h"

using namespace nvinfer1;

namespace ffexport
{
namespace plugin
{

std::string FrameFusionPrunePlugin::check(Dims const& importance, DataType type) const
{
    if (importance.nbDims != 1)
    {
        return std::string(kName) + ": importance must be 1-D [n] (got " + std::to_string(importance.nbDims)
            + " dims)";
    }
    return validatePrune(importance.d[0], toValueType(type), mAttributes.keep);
}

int32_t FrameFusionPrunePlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    return guarded("configurePlugin",
        [&]() -> std::string
        {
            std::string const error = arity(nbInputs, nbOutputs, true);
            return error.empty() ? check(in[0].desc.dims, in[0].desc.type) : error;
        });
}

int32_t FrameFusionPrunePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kInputs || nbOutputs != kOutputs || inputTypes[0] != DataType::kFLOAT)
    {
        reportError(mRecorder, std::string(kName) + ": importance must be float32");
        return -1;
    }
    outputTypes[0] = DataType::kINT64;
    return 0;
}

int32_t FrameFusionPrunePlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& exprBuilder) noexcept
{
    return guarded("getOutputShapes",
        [&]() -> std::string
        {
            if (nbInputs != kInputs || nbOutputs != kOutputs || inputs[0].nbDims != 1)
            {
                return std::string(kName) + ": expects importance [n]";
            }
            IDimensionExpr const* n = inputs[0].d[0];
            std::string const error
                = validatePrune(n->isConstant() ? n->getConstantValue() : kUnknownDim, kValueFloat32, mAttributes.keep);
            if (!error.empty())
            {
                return error;
            }
            outputs[0].nbDims = 1;
            outputs[0].d[0] = exprBuilder.constant(mAttributes.keep);
            return {};
        });
}

bool FrameFusionPrunePlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    PluginTensorDesc const* desc = linearTensor(pos, inOut, nbInputs, nbOutputs);
    return desc != nullptr && desc->type == (pos == 0 ? DataType::kFLOAT : DataType::kINT64);
}

size_t FrameFusionPrunePlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    if (nbInputs != kInputs || inputs[0].max.nbDims != 1 || inputs[0].max.d[0] < 1)
    {
        return 0;
    }
    return frameFusionPruneWorkspaceSize(inputs[0].max.d[0]);
}

int32_t FrameFusionPrunePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    return guarded("enqueue",
        [&]()
        {
            int64_t const n = inputDesc[0].dims.d[0];
            return launched(launchFrameFusionPrune(static_cast<float const*>(inputs[0]), n, mAttributes.keep,
                static_cast<int64_t*>(outputs[0]), workspace, frameFusionPruneWorkspaceSize(n), stream));
        });
}

std::string FrameFusionPrunePlugin::validateAttributes(PruneAttributes const& attributes)
{
    return validatePruneAttributes(attributes.keep);
}

} // namespace plugin
} // namespace ffexport
