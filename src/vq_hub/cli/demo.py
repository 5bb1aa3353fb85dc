"""`vq-hub demo`: serve the Gradio app (Generate, Reconstruct, Inpaint / complete) in the browser, offline.

examples:
  vq-hub demo                       # the shipped Fashion-MNIST checkpoints, on http://127.0.0.1:7860
  vq-hub demo --model my-pipeline my-tokenizer --class-names cat dog --port 8080
"""

from ._common import CommandError, positive_int


def register(commands) -> None:
    parser = commands.add_parser("demo", help="Serve the Gradio demo in the browser (no internet needed).",
                                 description=__doc__)  # fmt: skip
    parser.add_argument("--model", nargs="+", help="Pipeline and tokenizer folders or Hub ids (default: the shipped "
                        "Fashion-MNIST checkpoints in ./checkpoints).")  # fmt: skip
    parser.add_argument("--class-names", nargs="+", help="A name per class of the priors (default: the names their "
                        "configs record, as the shipped checkpoints do, else 'class N').")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="Address to serve on (0.0.0.0 for every interface).")
    parser.add_argument("--port", type=positive_int, default=7860, help="Port to serve on.")
    parser.add_argument("--share", action="store_true", help="Also open a public gradio.live link (needs internet).")
    parser.set_defaults(run=run)


def run(args) -> str:
    try:
        from .. import demo
    except ImportError as error:
        raise CommandError(f"the demo needs gradio: pip install 'vq_hub[demo]' ({error})") from None
    try:
        models = demo.load_models(args.model, args.class_names)
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(str(error)) from None
    demo.build_demo(models).launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True)
    return "demo stopped"
