/*
 * libffexport_plugins.so entry points: both creators are registered when the library is loaded
 * (REGISTER_TENSORRT_PLUGIN: `polygraphy --plugins`, `trtexec --staticPlugins`, dlopen/ctypes), and
 * the library exports getCreators / setLoggerFinder for IPluginRegistry::loadLibrary
 * (`trtexec --dynamicPlugins`, version-compatible engines). A library loaded through loadLibrary
 * must not also register statically (the registry would see each creator twice): build it with
 * -DFFEXPORT_STATIC_REGISTRATION=OFF for that use.
 */
#include "frameFusionMergePlugin.h"
#include "frameFusionPluginUtils.h"
#include "frameFusionPrunePlugin.h"

#include <NvInferRuntime.h>

using ffexport::plugin::FrameFusionMergePluginCreator;
using ffexport::plugin::FrameFusionPrunePluginCreator;

#if FFEXPORT_STATIC_REGISTRATION
REGISTER_TENSORRT_PLUGIN(FrameFusionMergePluginCreator);
REGISTER_TENSORRT_PLUGIN(FrameFusionPrunePluginCreator);
#endif

extern "C" {

__attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    ffexport::plugin::setLoggerFinder(finder);
}

__attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static FrameFusionMergePluginCreator merge;
    static FrameFusionPrunePluginCreator prune;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&merge, &prune};
    nbCreators = 2;
    return creators;
}

} // extern "C"
