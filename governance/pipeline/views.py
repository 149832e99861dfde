from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from governance.models import Role
from governance.pipeline.models import StageBatch
from governance.pipeline.selectors import dead_letters, stage_backlogs
from governance.pipeline.services import dead_letter_retry
from governance.services import PermissionDenied, client_address
from governance.views import page_project
from traces.selectors import analysis_lag


@login_required
def pipeline_status(request, slug):
    """How far behind the analysis is, what each stage has waiting, and the traces it gave up on."""
    project = page_project(request, slug)
    page = Paginator(dead_letters(project=project), 50).get_page(request.GET.get("page"))
    return render(request, "pipeline/status.html", {
        "project": project, "lag": analysis_lag(project=project, now=timezone.now()),
        "backlogs": stage_backlogs(project=project), "page": page, "quiet_seconds": settings.TRACE_QUIET_SECONDS,
        "can_retry": request.membership is not None and request.membership.allows(Role.OPERATOR),
    })


@login_required
@require_POST
def dead_letter_retry_view(request, slug, batch_id):
    project = page_project(request, slug)
    batch = get_object_or_404(StageBatch, project=project, pk=batch_id)
    try:
        if dead_letter_retry(batch=batch, actor=request.user, address=client_address(request)):
            messages.success(request, f"Trace {batch.trace_ids[0]} will go through {batch.stage} again.")
        else:
            messages.info(request, "That work is no longer a dead letter: someone retried it already.")
    except PermissionDenied as exc:
        messages.error(request, str(exc))
    return redirect("pipeline-status", slug=slug)
