"""The one-line reasons cut from other libraries' messages (trainer/contract/errors.py)."""
from __future__ import annotations

from trainer.contract.errors import adios_reason, load_refusal

STAMP = "\x1b[1;36m[Tue Dec 01 12:16:37 2026]\x1b[1;34m [ADIOS2 EXCEPTION]\x1b[0m"
NESTED = (f"{STAMP} <Engine> <BP4Reader> <OpenFiles> : File dir.bp could not be found within the 0.000000s "
          f"timeout: errno=2: {STAMP} <Toolkit> <transport::file::FilePOSIX> <CheckFile> : couldn't open file "
          "dir.bp/md.idx, in call to POSIX open: errno = 2: No such file or directory\x1b[0m\n: iostream error"
          "\x1b[0m\n: iostream error")
SHORT = (f"{STAMP} <Engine> <BP3Reader> <Init> : The size of the input file bad.bp(6 bytes) is less than the "
         "minimum BP3 header size, which is 56 bytes. It is unlikely that this is a .bp file.\x1b[0m\n")
TORCH = ("Weights only load failed. This file can still be loaded, to do so you have two options, \x1b[1mdo those "
         "steps only if you trust the source of the checkpoint\x1b[0m. \n\t(1) In PyTorch 2.6, we changed the "
         "default value of the `weights_only` argument in `torch.load` from `False` to `True`. Re-running "
         "`torch.load` with `weights_only` set to `False` will likely succeed, but it can result in arbitrary "
         "code execution. Do it only if you got the file from a trusted source.\n\t(2) Alternatively, to load "
         "with `weights_only=True` please check the recommended steps in the following error message.\n\t"
         "WeightsUnpickler error: Unsupported global: GLOBAL __main__.Evil was not an allowed global by default. "
         "Please use `torch.serialization.add_safe_globals([__main__.Evil])` or the `torch.serialization."
         "safe_globals([__main__.Evil])` context manager to allowlist this global if you trust this "
         "class/function.\n\nCheck the documentation of torch.load to learn more about types accepted by "
         "default with weights_only https://pytorch.org/docs/stable/generated/torch.load.html.")


def test_adios_reason_keeps_the_innermost_words():
    assert len(NESTED) > 300
    assert adios_reason(RuntimeError(NESTED)) == "couldn't open file dir.bp/md.idx: No such file or directory"
    assert adios_reason(SHORT) == ("The size of the input file bad.bp(6 bytes) is less than the minimum BP3 "
                                   "header size, which is 56 bytes. It is unlikely that this is a .bp file.")
    assert adios_reason("plain words") == "plain words"
    assert len(adios_reason(STAMP + " <A> : " + "x" * 500)) == 160


def test_load_refusal_drops_the_unsafe_advice():
    text = load_refusal(Exception(TORCH))
    assert text == ("refused by weights_only loading: Unsupported global: GLOBAL __main__.Evil was not an "
                    "allowed global by default")
    assert load_refusal(KeyError("model")) == "KeyError: 'model'"
