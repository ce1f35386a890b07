from django.http import HttpResponse, JsonResponse
from django.urls import path


def home(request):
    return HttpResponse("portal home")


def account(request, name):
    return JsonResponse({"account": name})


def token_lookalike(request):
    # A portal route next to the report path must keep answering.
    return HttpResponse("portal tokens page")


urlpatterns = [
    path("", home),
    path("accounts/<str:name>/", account),
    path("tokens/", token_lookalike),
]
