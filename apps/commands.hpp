// The subcommands of xy-node that live in files of their own (argv[0] is the command's name).
#pragma once

// `xy-node preprocess`: JSONL corpora -> token shards (apps/cmd_preprocess.cpp, docs/DATA.md).
int cmd_preprocess(int argc, char** argv);

// `xy-node verify`: checks a checkpoint's files against its manifest (apps/cmd_checkpoint.cpp).
int cmd_verify(int argc, char** argv);
